"""Operations Mask R-CNN is built from: box arithmetic, box coding and RoI feature extraction."""

from maskrcnn.fast_path_switch import fast_paths, fast_paths_enabled
from maskrcnn.ops.box_coder import BoxCoder
from maskrcnn.ops.boxes import clip_boxes
from maskrcnn.ops.poolers import MultiScaleRoIPooler, assign_fpn_levels
from maskrcnn.ops.roi_align import roi_align
from maskrcnn.ops.roi_pool import roi_pool

__all__ = [
    "BoxCoder",
    "MultiScaleRoIPooler",
    "assign_fpn_levels",
    "clip_boxes",
    "fast_paths",
    "fast_paths_enabled",
    "roi_align",
    "roi_pool",
]
