"""Mask R-CNN in plain PyTorch.

import maskrcnn
model = maskrcnn.load_model("weights.pt")       # this project's or torchvision's file
results = model.predict([image])               # boxes, scores, labels, masks per image
"""

from maskrcnn.config import ModelConfig
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError
from maskrcnn.interop.torchvision import from_torchvision
from maskrcnn.modeling.mask_rcnn import MaskRCNN, build_model

__version__ = "0.1.0"

__all__ = ["CheckpointError", "MaskRCNN", "ModelConfig", "build_model", "from_torchvision", "load_model"]
