"""Export to ONNX, and a check of the exported file against the eager model."""

import copy
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
from maskrcnn.config import InputConfig
from maskrcnn.data.images import to_image_tensor, to_raw_tensor
from maskrcnn.data.intensity import PER_IMAGE, normalize_channels
from maskrcnn.files import atomic_output
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.structures import match_near_ties

INPUT_NAME = "image"
# Each output's dynamic axes; a model exports those its heads give (no mask head: no masks).
OUTPUT_AXES = {
    "boxes": {0: "detections"},
    "scores": {0: "detections"},
    "labels": {0: "detections"},
    "masks": {0: "detections", 1: "height", 2: "width"},
    "keypoints": {0: "detections"},
    "keypoint_scores": {0: "detections"},
}
# The outputs each head adds to boxes, scores and labels.
HEAD_OUTPUTS = {"mask": ("masks",), "keypoint": ("keypoints", "keypoint_scores")}
OUTPUT_NAMES = tuple(OUTPUT_AXES)
OPSET = 17
GRAPH_INTENSITIES = ("range", *PER_IMAGE)


def export_intensity(config: InputConfig, requested: str | None = None) -> str:
    """The intensity normalization an exported graph applies: the model's own, or for a model
    whose `intensity` is "auto" (chosen per image by its type, which a float32 graph input no
    longer tells) `requested`, by default "range" (input in [0, 1]).

    Raises ValueError if `requested` contradicts the normalization the model was trained with.
    """
    if requested is not None and requested not in GRAPH_INTENSITIES:
        choices = ", ".join(GRAPH_INTENSITIES)
        raise ValueError(f"the graph's intensity must be one of {choices}, got {requested!r}")
    if config.intensity == "auto":
        return requested or "range"
    if requested not in (None, config.intensity):
        raise ValueError(
            f"the model normalizes intensities by {config.intensity!r} (model.input.intensity); "
            f"a graph applying {requested!r} would feed it other values than it was trained on"
        )
    return config.intensity


def with_export_intensity(model: MaskRCNN, requested: str | None = None) -> MaskRCNN:
    """`model` itself, its config's `input.intensity` set to `export_intensity(...)`, so that
    its eager `predict` normalizes as the exported graph does."""
    intensity = export_intensity(model.config.input, requested)
    model.config = replace(model.config, input=replace(model.config.input, intensity=intensity))
    return model


def export_onnx(
    model: MaskRCNN,
    path: str | Path,
    example_size: tuple[int, int] = (480, 640),
    intensity: str | None = None,
    score_threshold: float = PREDICT_SCORE_THRESHOLD,
) -> Path:
    """Write `model` as an ONNX graph: image (C, H, W) float32, any H and W ->
    boxes (D, 4) float32 xyxy, scores (D,), labels (D,) int64 and, with the mask head,
    masks (D, H, W) bool, with the keypoint head keypoints (D, K, 3) [x, y, 1] and
    keypoint_scores (D, K).

    The graph is a trace of the model's own forward (`OneImage`), of every model
    `build_model` makes. C is model.input.channels. The input is in [0, 1] when the graph's intensity (see
    `export_intensity`; `intensity` chooses for "auto" models) is "range"; for "minmax" and
    "percentile" it is the raw intensities, normalized per channel inside the graph.
    The file is written next to `path` and renamed over it only when complete.
    """
    path = Path(path)
    # The caller's model keeps its device and training flag: export works on a CPU copy.
    model = with_export_intensity(copy.deepcopy(model).cpu().eval(), intensity)
    graph = OneImage(model, score_threshold)
    channels = model.config.input.channels
    example = torch.rand(channels, *example_size, generator=torch.Generator().manual_seed(0))
    names = graph.output_names
    dynamic_axes = {INPUT_NAME: {1: "height", 2: "width"}, **{name: OUTPUT_AXES[name] for name in names}}
    # Traced, RoIAlign is torchvision's (ops/roi_align.py: it has an ONNX mapping), as RoIPool
    # always is; the other fast paths trace as they run (folded norms become constants).
    with atomic_output(path) as temporary:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about every shape it reads; the graph computes them all as tensors.
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(
                graph,
                (example,),
                temporary,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(names),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    return path


class OneImage(torch.nn.Module):
    """The model's own forward on one image, with the graph's inputs and outputs:
    image (C, H, W) float32 -> boxes, scores, labels, masks (see `export_onnx`).

    For intensity "minmax" and "percentile" the image holds raw values and is normalized
    per channel first, by the function `to_image_tensor` uses for the eager model.
    """

    def __init__(self, model: MaskRCNN, score_threshold: float):
        super().__init__()
        self.model = model
        self.score_threshold = float(score_threshold)
        heads = model.roi_heads.heads
        extra = [name for head, names in HEAD_OUTPUTS.items() if head in heads for name in names]
        self.output_names = ("boxes", "scores", "labels", *extra)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        config = self.model.config.input
        if config.intensity in PER_IMAGE:
            image = normalize_channels(image, config.intensity, config.percentiles)
        (result,) = self.model([image], "fp32", self.score_threshold)
        return tuple(result[name] for name in self.output_names)


@dataclass
class ExportCheck:
    """How the ONNX Runtime run of an exported file compares with the eager model."""

    detections: int
    same_count: bool
    max_box_difference: float  # pixels
    max_score_difference: float
    same_labels: bool
    mask_agreement: float  # fraction of mask pixels equal
    max_keypoint_difference: float = 0.0  # pixels (0 for a model without keypoints)

    @property
    def ok(self) -> bool:
        return (
            self.same_count
            and self.max_box_difference <= 1e-3
            and self.same_labels
            and self.mask_agreement >= 0.999
            and self.max_keypoint_difference <= 1e-2
        )


def onnx_session(path: str | Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def graph_input(image, config: InputConfig) -> torch.Tensor:
    """What a graph exported with `config` takes for `image` (anything `model.predict` takes):
    (C, H, W) float32, normalized for "range" and "auto", the raw values for "minmax" and
    "percentile", which the graph normalizes itself."""
    if config.intensity in PER_IMAGE:
        return to_raw_tensor(image, config.channels)
    return to_image_tensor(image, config)


def run_onnx(session, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """image (C, H, W) float (see `graph_input`) -> the eager model's result dict, from ONNX Runtime."""
    outputs = session.run(None, {INPUT_NAME: image.detach().cpu().numpy().astype(np.float32)})
    names = [output.name for output in session.get_outputs()]
    return {name: torch.from_numpy(value) for name, value in zip(names, outputs)}


def compare_with_eager(
    model: MaskRCNN, session, image, score_threshold: float = PREDICT_SCORE_THRESHOLD
) -> ExportCheck:
    """Run both on `image` (anything `model.predict` takes; the graph gets `graph_input` of it)
    and compare detection by detection (detections whose scores agree to 1e-5 may come in
    either order). `model` must normalize as the graph does (`with_export_intensity`)."""
    (eager,) = model.predict(image, score_threshold=score_threshold)
    eager = {key: value.cpu() for key, value in eager.items()}
    exported = match_near_ties(eager, run_onnx(session, graph_input(image, model.config.input)))
    count = len(eager["boxes"])
    same_count = len(exported["boxes"]) == count
    if not same_count or count == 0:
        return ExportCheck(count, same_count, 0.0 if same_count else float("inf"), 0.0, same_count, 1.0)
    return ExportCheck(
        detections=count,
        same_count=True,
        max_box_difference=(exported["boxes"] - eager["boxes"]).abs().max().item(),
        max_score_difference=(exported["scores"] - eager["scores"]).abs().max().item(),
        same_labels=torch.equal(exported["labels"], eager["labels"]),
        mask_agreement=_agreement(exported.get("masks"), eager.get("masks")),
        max_keypoint_difference=_largest_difference(exported.get("keypoints"), eager.get("keypoints")),
    )


def _largest_difference(exported: torch.Tensor | None, eager: torch.Tensor | None) -> float:
    return 0.0 if eager is None else (exported - eager).abs().max().item()


def _agreement(exported: torch.Tensor | None, eager: torch.Tensor | None) -> float:
    """Fraction of mask pixels equal (1 for a model without masks)."""
    return 1.0 if eager is None else (exported == eager).float().mean().item()
