"""The Table 1 learning-curve figure: a configuration's reference runs (the
float32 row beside its mixed_bfloat16 rerun) are read from their result
file and drawn with the study's own runs."""

import json
import os
import types

from cram_keras.experiments import named
from cram_keras.studies import table1

RESULTS = os.path.join(named.REPO, "benchmarks", "results")


def test_the_bfloat16_check_draws_the_float32_row_beside_it(tmp_path):
    config, _ = named.load("rnn_spn/table1_bf16")
    study = types.SimpleNamespace(named=config)
    curves = table1.reference_curves(study)
    with open(os.path.join(RESULTS, "rnn_spn_paper.json")) as f:
        float32 = json.load(f)["models"]["rnn_spn_d3"]["valid_per_digit_error"]
    assert curves == {"RNN-SPN, d = 3, float32": float32}
    # A configuration without reference runs has none.
    plain, _ = named.load("rnn_spn/table1")
    assert table1.reference_curves(types.SimpleNamespace(named=plain)) == {}

    results = {
        "models": {
            "rnn_spn_d3": dict(valid_per_digit_error=[0.5, 0.2], finished=False)
        },
        "settings": {"dtype_policy": "mixed_bfloat16"},
    }
    path = tmp_path / "curves.png"
    assert table1.learning_curves_figure(results, str(path), curves) == str(path)
    assert path.stat().st_size > 0
