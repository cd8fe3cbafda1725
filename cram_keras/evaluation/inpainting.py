"""Scoring a trained inpainter (`score_inpainter`): its completions and the
classical baselines through the one scorer (`evaluate_inpainting`), and
what each pathway of a CRAM encoder contributes (`pathway_diagnostics`).

The model is any inpainter with ``predict`` on ``(image, mask)`` batches
and, for the diagnostics, ``generate(images, mask, ablate=...)`` (on JAX
``infer(images, mask, ablate=...)``) and an
``encoder`` with ``ablations`` (`cram_keras.models.inpainting`).
"""

import keras
import numpy as np

from cram_keras.data.pipelines import inpainting_eval_dataset
from cram_keras.evaluation.baselines import BASELINES, evaluate_inpainting
from cram_keras.evaluation.glimpses import window_statistics
from cram_keras.evaluation.metrics import completed_image


def complete(model, images, masks, batch_size=256):
    """Completed images (NumPy) for `images` and `masks`, in batches."""
    out = model.predict(inpainting_eval_dataset(images, masks, batch_size), verbose=0)
    return np.asarray(out, np.float32)


def score_methods(model, images, masks, method, batch_size=256):
    """`{method: scores}` for `model` (skipped when None) and every
    classical baseline, on the same images and masks."""
    methods = {}
    if model is not None:
        completed = complete(model, images, masks, batch_size)
        methods[method] = _as_floats(evaluate_inpainting(images, completed, masks))
    for name, baseline in BASELINES.items():
        methods[name] = _as_floats(
            evaluate_inpainting(images, baseline(images, masks), masks)
        )
    return methods


def score_inpainter(model, images, masks, method, batch_size=256):
    """``{"methods": ..., "pathway_diagnostics": ...}``: `score_methods` of
    ``model`` (named ``method``) and the baselines, and the
    `pathway_diagnostics` of its encoder (None without glimpses)."""
    return {
        "methods": score_methods(model, images, masks, method, batch_size),
        "pathway_diagnostics": pathway_diagnostics(model, images, masks, batch_size)[0],
    }


def pathway_diagnostics(model, images, masks, batch_size=256):
    """What each pathway of a CRAM encoder contributes, on `images`: hole
    PSNR as scored, with the glimpse patches zeroed and with the context
    network's state zeroed (`CRAMEncoder.call`'s `ablate`), and where the
    glimpse windows go (`cram_keras.evaluation.glimpses.window_statistics`).

    Returns `(diagnostics, taus)` with taus (N, G, 3), or `(None, None)` for
    an encoder without glimpses.
    """
    ablations = getattr(model.encoder, "ablations", None)
    if not ablations:
        return None, None
    results, taus = {}, None
    for ablate in (None, *ablations):
        fill = _filler(model, ablate, traced=len(images) > 4 * batch_size)
        completed, tau_batches = [], []
        for start in range(0, len(images), batch_size):
            x = np.asarray(images[start : start + batch_size], np.float32)
            mask = np.asarray(masks[start : start + batch_size], np.float32)
            out, tau = fill(x, mask)
            completed.append(keras.ops.convert_to_numpy(out))
            tau_batches.append(keras.ops.convert_to_numpy(tau))
        scores = evaluate_inpainting(images, np.concatenate(completed), masks)
        key = "hole_psnr" if ablate is None else f"hole_psnr_{ablate}_zeroed"
        results[key] = float(scores["hole_psnr"])
        if ablate is None:
            taus = np.concatenate(tau_batches)
    results["windows"] = window_statistics(taus, masks)
    return results, taus


def _filler(model, ablate, traced):
    """`fill(images, mask) -> (completed, tau)` with `ablate`: on TensorFlow
    a `tf.function` when `traced` (for more than a few batches; for a few,
    tracing costs more) and eager otherwise; on JAX `model.infer` (one
    compiled program)."""
    jax = keras.backend.backend() == "jax"
    generate = model.infer if jax else model.generate

    def fill(x, mask):
        generated, tau = generate(x, mask, ablate=ablate)
        return completed_image(x, generated, mask), tau

    if jax:
        return fill
    if traced:
        import tensorflow as tf

        fill = tf.function(fill)
    convert = keras.ops.convert_to_tensor
    return lambda x, mask: fill(convert(x, "float32"), convert(mask, "float32"))


def _as_floats(scores):
    return {k: float(v) for k, v in scores.items()}
