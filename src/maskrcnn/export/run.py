"""`maskrcnn export`'s work: write a model as an ONNX graph and check it against the eager model."""

import tempfile
from pathlib import Path

import torch

from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
from maskrcnn.data.images import load_image
from maskrcnn.errors import OptionError, one_line, user_errors
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError


class ExportCheckFailed(Exception):
    """The exported graph does not reproduce the eager model's detections (the file is written)."""


def export_and_check(
    weights: str,
    out: str,
    check_image: str | None = None,
    check: bool = True,
    intensity: str | None = None,
    score_threshold: float = PREDICT_SCORE_THRESHOLD,
) -> int:
    """Write the file, say what it takes, and (with `check`) compare it with the eager model.

    Raises OptionError when nothing was written (bad weights, missing packages, unwritable
    output) and ExportCheckFailed when the written file does not agree with the model.
    intensity: the graph's intensity normalization for a model whose model.input.intensity
    is "auto" (default "range"); see `export.onnx.export_intensity`."""
    try:
        from maskrcnn.export.onnx import compare_with_eager, export_onnx, onnx_session, with_export_intensity
    except ImportError as error:
        raise OptionError(
            f"ONNX export needs the onnx and onnxruntime packages ({error}); "
            "install them with: pip install 'maskrcnn[export]'"
        ) from None
    try:  # first: an unreadable image should not cost loading the model
        image = load_image(Path(check_image)) if check_image and check else None
    except (ValueError, OSError) as error:
        raise OptionError(f"--check-image {one_line(error)}") from None
    with user_errors(CheckpointError, ValueError, OSError):
        # The eager model normalizes as the graph will, so that the check compares like with like.
        model = with_export_intensity(load_model(weights, device="cpu"), intensity)
        path = export_onnx(model, out, score_threshold=score_threshold)
    size_mb = path.stat().st_size / 2**20
    print(f"exported {weights} -> {path} ({size_mb:.1f} MiB, dynamic image size)")
    print(_intensity_line(model.config.input))
    if not check:
        return 0
    if image is None:
        channels = model.config.input.channels
        image = torch.rand(channels, *_check_size(model), generator=torch.Generator().manual_seed(0))
    where = check_image or f"a random {image.shape[1]}x{image.shape[2]} image"
    result = compare_with_eager(model, onnx_session(path), image, score_threshold)
    threshold = score_threshold
    if result.detections == 0 and result.same_count and score_threshold > 0:
        # Nothing was compared: check a graph that keeps every detection (it differs from the
        # file only in its last filter) on the same image, so that boxes, labels and masks are.
        print(f"check on {where}: no detection scores {score_threshold:g} or more on either side")
        with tempfile.TemporaryDirectory() as folder:
            every = export_onnx(model, Path(folder) / "check.onnx", score_threshold=0.0)
            result = compare_with_eager(model, onnx_session(every), image, 0.0)
        threshold = 0.0
    print(
        f"check on {where} at score threshold {threshold:g}: {result.detections} detections, "
        f"same count {result.same_count}, max box difference {result.max_box_difference:.2e} px, "
        f"max score difference {result.max_score_difference:.2e}, same labels {result.same_labels}, "
        f"mask pixels agreeing {100 * result.mask_agreement:.3f} %"
    )
    if not result.ok:
        raise ExportCheckFailed("the exported graph does not reproduce the eager model's detections")
    if result.detections == 0:
        print(
            "not checked: the model detects nothing in this image at any score, so nothing was compared; "
            "give --check-image an image the model finds objects in"
        )
    return 0


def _intensity_line(config) -> str:
    """One line on what the exported file's input is and how it is normalized."""
    image = f"input 'image' is ({config.channels}, H, W) float32"
    if config.intensity == "range":
        return f"intensity range: {image} in [0, 1] (integer pixels divided by their type's maximum)"
    if config.intensity == "minmax":
        how = "minimum and maximum"
    else:
        how = "percentiles {:g} and {:g}".format(*config.percentiles)
    return (
        f"intensity {config.intensity}: {image} of raw intensities; "
        f"the graph maps each channel's {how} to 0 and 1"
    )


def _check_size(model) -> tuple[int, int]:
    """A 3:4 image at the model's input size: resizing it changes nothing, so the comparison
    measures the exported graph, not two libraries' bilinear resampling of a random image."""
    pre = model.preprocessor
    return pre.min_size, min(round(pre.min_size * 4 / 3), pre.max_size)
