"""`check_batches_for_replicas`: under a strategy of R replicas every global
batch must hold at least R examples; the refusal names the set, the sizes
and a batch size that fits every set sharing the flag."""

import pytest

from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import check_batches_for_replicas
from cram_keras.training.distribute import Distribution

STRATEGY = object()  # any strategy: only its presence and replicas count


def two(replicas=2):
    return Distribution("mirrored", STRATEGY, replicas=replicas)


def sets(*sizes, batch=16, flag="--batch-size", full=False):
    return [(f"set{i}", n, batch, flag, full) for i, n in enumerate(sizes)]


@pytest.mark.parametrize(
    "distribution",
    [Distribution("default"), Distribution("mirrored", STRATEGY, replicas=1)],
)
def test_one_replica_accepts_any_sizes(distribution):
    check_batches_for_replicas(distribution, sets(1, 17, 33, batch=16))


@pytest.mark.parametrize(
    "sizes, replicas",
    [((64, 32), 2), ((66, 34), 2), ((67,), 3), ((16,), 8), ((5,), 2), ((2,), 2)],
)
def test_last_batches_of_at_least_the_replicas_pass(sizes, replicas):
    check_batches_for_replicas(two(replicas), sets(*sizes))


def test_a_last_batch_below_the_replicas_is_refused_with_a_fitting_size():
    with pytest.raises(UsageError) as info:
        check_batches_for_replicas(two(), sets(64, 65, 32))
    message = str(info.value)
    assert message.startswith(
        "--strategy mirrored splits every batch over 2 replicas, but the 65 set1 "
        "in batches of 16 end with a batch of 1 (65 = 4 x 16 + 1)"
    )
    # 15 leaves 4, 5 and 2 over: every set of the flag gets at least 2.
    assert "(e.g. --batch-size 15)" in message
    for n in (64, 65, 32):
        assert n % 15 == 0 or n % 15 >= 2


def test_the_fitting_size_counts_only_the_sets_of_the_flag():
    mixed = sets(33, batch=32, flag="--set eval_batch_size") + sets(65, batch=16)
    with pytest.raises(UsageError) as info:
        check_batches_for_replicas(two(), mixed)
    assert "the 33 set0 in batches of 32 end with a batch of 1" in str(info.value)
    assert "(e.g. --set eval_batch_size=31)" in str(info.value)


def test_full_batches_only_needs_just_a_batch_of_the_replicas():
    check_batches_for_replicas(two(), sets(65, full=True))
    with pytest.raises(UsageError, match=r"but --batch-size is 1: a replica would"):
        check_batches_for_replicas(two(), sets(65, batch=1, full=True))


def test_fewer_examples_than_replicas_is_refused():
    with pytest.raises(UsageError, match=r"only 3 set0: .*at least 4 set0"):
        check_batches_for_replicas(two(4), sets(3))


def test_no_fitting_size_gives_no_example():
    # 3 examples in batches of 2 leave 1 over, and no batch size between
    # the replicas (2) and the flag's (2) does better.
    with pytest.raises(UsageError) as info:
        check_batches_for_replicas(two(), sets(3, batch=2))
    assert "e.g." not in str(info.value)
