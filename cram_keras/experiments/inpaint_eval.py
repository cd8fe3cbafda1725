"""--eval-only of the inpainting experiment (`cram_keras.experiments.inpaint`):
a saved inpainter and the classical baselines scored on a Config's test set
and masks, as a run scores its model."""

import json
import os
import time

from cram_keras.data.inpainting import evaluation_masks, load_images
from cram_keras.evaluation.inpainting import score_inpainter
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.run_dir import hold_run_dir
from cram_keras.experiments.summary import note
from cram_keras.models.inpainting import CNNEncoder, ContextSkipEncoder
from cram_keras.training.checkpoint import (
    ModelFileError,
    check_inpainter_fits,
    load_inpainter,
)
from cram_keras.training.distribute import Distribution
from cram_keras.utils import write_json


def evaluate_checkpoint(config, checkpoint, output_dir, bundled=False):
    """Scores a saved inpainter and the baselines on ``config``'s test set;
    writes ``eval_metrics.json`` and ``eval_inpaint.png`` into ``output_dir``,
    which it holds as a run holds its run directory (`hold_run_dir`: a busy
    one is refused). A checkpoint it cannot score is a `UsageError`."""
    with hold_run_dir(output_dir, Distribution("default"), note):
        try:
            model = load_inpainter(checkpoint)
            _, x_test = load_images(config, bundled=bundled)
            check_inpainter_fits(model, x_test.shape[1:], config.dataset)
        except ModelFileError as err:
            raise UsageError(str(err)) from None
        masks = evaluation_masks(config, len(x_test), x_test.shape[1])
        encoders = {CNNEncoder: "cnn_encoder", ContextSkipEncoder: "cram_skip"}
        method = next(
            (name for cls, name in encoders.items() if isinstance(model.encoder, cls)),
            "cram",
        )
        start = time.perf_counter()
        results = dict(
            score_inpainter(model, x_test, masks, method, config.eval_batch_size),
            checkpoint=os.path.abspath(checkpoint),
            dataset=config.dataset,
            mask=config.mask,
            n_test=int(len(x_test)),
        )
        results["wall_seconds"] = time.perf_counter() - start
        os.makedirs(output_dir, exist_ok=True)
        from cram_keras.visualization import inpainting_figure

        n_fig = min(config.figure_examples, len(x_test))
        inpainting_figure(
            model,
            x_test[:n_fig],
            masks[:n_fig],
            os.path.join(output_dir, "eval_inpaint.png"),
        )
        write_json(os.path.join(output_dir, "eval_metrics.json"), results)
    print(json.dumps(results, indent=2, sort_keys=True))
    return results
