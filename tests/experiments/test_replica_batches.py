"""`check_batches_for_replicas`: under a `tf.distribute` strategy of R
replicas every global batch must hold at least R examples, under JAX's data
parallelism over R devices it must be a multiple of R; the refusal names
the set, the sizes and a batch size that fits every set sharing the flag."""

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
    with pytest.raises(UsageError, match=r"but --batch-size is 1, so a replica would"):
        check_batches_for_replicas(two(), sets(65, batch=1, full=True))


def test_fewer_examples_than_replicas_is_refused():
    with pytest.raises(
        UsageError, match=r"only 3 set0, so a replica .*Use at least 4 set0"
    ):
        check_batches_for_replicas(two(4), sets(3))


def test_no_fitting_size_gives_no_example():
    # 3 examples in batches of 2 leave 1 over, and no batch size between
    # the replicas (2) and the flag's (2) does better.
    with pytest.raises(UsageError) as info:
        check_batches_for_replicas(two(), sets(3, batch=2))
    assert "e.g." not in str(info.value)


def jax(devices=2):
    return Distribution("jax_data_parallel", replicas=devices)


@pytest.mark.parametrize("sizes", [(64, 32), (66, 34), (16,), (2,)])
def test_jax_takes_every_batch_that_is_a_multiple_of_the_devices(sizes):
    check_batches_for_replicas(jax(), sets(*sizes))


def test_jax_refuses_a_last_batch_that_is_not_a_multiple_of_the_devices():
    # Keras' data parallelism on JAX fails on such a batch with a sharding
    # error in the middle of an epoch. With the batch size a multiple of the
    # devices, every last batch is one exactly when its set is, so no other
    # batch size is suggested.
    with pytest.raises(UsageError) as info:
        check_batches_for_replicas(jax(), sets(64, 66, 35))
    message = str(info.value)
    assert message == (
        "JAX's data parallelism shards every batch over 2 devices, but the 35 "
        "set2 in batches of 16 end with a batch of 3 (35 = 2 x 16 + 3), which "
        "does not split evenly over the devices. Choose --batch-size so that "
        "the last batch is a multiple of 2, or change the number of set2."
    )


@pytest.mark.parametrize("full", [True, False])
def test_jax_refuses_a_batch_size_that_is_not_a_multiple(full):
    with pytest.raises(UsageError, match=r"--batch-size is 15, which does not "):
        check_batches_for_replicas(jax(), sets(60, batch=15, full=full))
