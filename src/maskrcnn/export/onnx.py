"""Export to ONNX, and a check of the exported file against the eager model."""

import copy
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maskrcnn.export.graph import TraceableMaskRCNN
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.testing import match_near_ties

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")
OPSET = 17


def export_onnx(model: MaskRCNN, path: str | Path, example_size: tuple[int, int] = (480, 640)) -> Path:
    """Write `model` as an ONNX graph: image (3, H, W) float32 RGB in [0, 1], any H and W ->
    boxes (D, 4) float32 xyxy, scores (D,), labels (D,) int64, masks (D, H, W) bool.

    The file is written next to `path` and renamed over it only when complete.
    """
    path = Path(path)
    # The caller's model keeps its device and training flag: export works on a CPU copy.
    model = copy.deepcopy(model).cpu().eval()
    graph = TraceableMaskRCNN(model)
    example = torch.rand(3, *example_size, generator=torch.Generator().manual_seed(0))
    dynamic_axes = {
        INPUT_NAME: {1: "height", 2: "width"},
        "boxes": {0: "detections"},
        "scores": {0: "detections"},
        "labels": {0: "detections"},
        "masks": {0: "detections", 1: "height", 2: "width"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
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
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


@dataclass
class ExportCheck:
    """How the ONNX Runtime run of an exported file compares with the eager model."""

    detections: int
    same_count: bool
    max_box_difference: float  # pixels
    max_score_difference: float
    same_labels: bool
    mask_agreement: float  # fraction of mask pixels equal

    @property
    def ok(self) -> bool:
        return (
            self.same_count
            and self.max_box_difference <= 1e-3
            and self.same_labels
            and self.mask_agreement >= 0.999
        )


def onnx_session(path: str | Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """image (3, H, W) float in [0, 1] -> the eager model's result dict, from ONNX Runtime."""
    outputs = session.run(None, {INPUT_NAME: image.detach().cpu().numpy().astype(np.float32)})
    return {name: torch.from_numpy(value) for name, value in zip(OUTPUT_NAMES, outputs)}


def compare_with_eager(model: MaskRCNN, session, image: torch.Tensor) -> ExportCheck:
    """Run both on `image` (3, H, W) and compare detection by detection (detections whose
    scores agree to 1e-5 may come in either order)."""
    eager = {key: value.cpu() for key, value in model.predict(image)[0].items()}
    exported = match_near_ties(eager, run_onnx(session, image))
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
        mask_agreement=(exported["masks"] == eager["masks"]).float().mean().item(),
    )
