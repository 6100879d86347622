"""Mask R-CNN in plain PyTorch.

import maskrcnn
model = maskrcnn.load_model("weights.pt")       # this project's or torchvision's file
results = model.predict([image])               # boxes, scores, labels, masks per image

The names below are imported when first used, so that `maskrcnn`'s command line answers a
mistyped option or path without first loading torch.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "CheckpointError": "maskrcnn.interop.state_dicts",
    "MaskRCNN": "maskrcnn.modeling.mask_rcnn",
    "ModelConfig": "maskrcnn.config",
    "build_model": "maskrcnn.modeling.build",
    "fast_paths": "maskrcnn.fast_path_switch",
    "from_detectron2": "maskrcnn.interop.detectron2",
    "fast_paths_enabled": "maskrcnn.fast_path_switch",
    "from_torchvision": "maskrcnn.interop.torchvision",
    "from_torchvision_keypoint": "maskrcnn.interop.torchvision",
    "load_model": "maskrcnn.interop.load",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'maskrcnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
