"""Operations Mask R-CNN is built from: box arithmetic, box coding and RoI feature extraction."""

from maskrcnn.ops.box_coder import BoxCoder
from maskrcnn.ops.boxes import box_area, clip_boxes, remove_small_boxes
from maskrcnn.ops.poolers import MultiScaleRoIPooler, assign_fpn_levels
from maskrcnn.ops.roi_align import roi_align
from maskrcnn.ops.roi_pool import roi_pool

__all__ = [
    "BoxCoder",
    "MultiScaleRoIPooler",
    "assign_fpn_levels",
    "box_area",
    "clip_boxes",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
]
