"""Multi-level RoI feature extraction for FPN (FPN paper, eq. 1)."""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.ops import box_area

from maskrcnn.ops._rois import rois_as_tensor
from maskrcnn.ops.roi_align import roi_align_rows
from maskrcnn.ops.roi_pool import roi_pool
from maskrcnn.ops.roi_variants import align_max_rows, warp_max_rows, warp_rows


def _roi_pool_rows(*args) -> Tensor:
    return roi_pool(*args).permute(0, 2, 3, 1).contiguous()


# Each gives (K, S, S, C) rows: RoIs from all levels are then gathered without transposing.
# The kinds of choices.POOLERS, the paper's Table 2c (ops/roi_variants.py).
POOLERS: dict[str, Callable[..., Tensor]] = {
    "align": roi_align_rows,
    "align_max": align_max_rows,
    "warp": warp_rows,
    "warp_max": warp_max_rows,
    "pool": _roi_pool_rows,
}


def assign_fpn_levels(
    boxes: Tensor, min_level: int, max_level: int, canonical_size: float = 224.0, canonical_level: int = 4
) -> Tensor:
    """boxes: (K, 4) xyxy -> (K,) int64 FPN level of each box, in [min_level, max_level].

    A 224x224 box (the ImageNet pre-training size) maps to level 4; each halving of
    its side moves it one level down. The epsilon keeps exact powers of two on the
    level they name despite float rounding.
    """
    # An inverted box (x2 < x1) has a negative area: as a zero one it goes to the finest level
    # instead of giving NaN, whose integer level matches none.
    size = torch.sqrt(box_area(boxes).clamp(min=0))
    levels = torch.floor(canonical_level + torch.log2(size / canonical_size) + 1e-6)
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


class MultiScaleRoIPooler(nn.Module):
    """Pools each RoI from the one feature level its size selects (or from a single level).

    strides: stride of each given feature map, e.g. (4, 8, 16, 32) for P2-P5, or (16,) for C4.
    kind: one of `POOLERS` (choices.POOLERS): "align" (RoIAlign), "align_max", "warp" (RoIWarp),
    "warp_max" (ops/roi_variants.py, the paper's Table 2c) or "pool" (RoIPool).
    """

    def __init__(
        self,
        output_size: int,
        strides: tuple[int, ...],
        sampling_ratio: int = 2,
        aligned: bool = False,
        kind: str = "align",
        canonical_size: float = 224.0,
        canonical_level: int = 4,
    ):
        super().__init__()
        if kind not in POOLERS:
            raise ValueError(f"pooler kind must be one of {sorted(POOLERS)}, got {kind!r}")
        self.output_size = output_size
        self.strides = tuple(strides)
        self.levels = [int(round(math.log2(s))) for s in self.strides]
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.kind = kind
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level

    def _pool(self, features: Tensor, rois: Tensor, stride: int) -> Tensor:
        return POOLERS[self.kind](
            features, rois, self.output_size, 1.0 / stride, self.sampling_ratio, self.aligned
        )

    def forward(self, features: list[Tensor], rois: Tensor | list[Tensor]) -> Tensor:
        """features: one (N, C, Hl, Wl) map per stride; rois: (K, 5) [image index, x1, y1, x2, y2]
        or N tensors (Ki, 4) xyxy, in image pixels.

        Returns (K, C, S, S) in the order of the RoIs, channels-last in memory.
        """
        rois, levels = self._rois_and_levels(features, rois)
        if levels is None:
            return self._pool(features[0], rois, self.strides[0]).permute(0, 3, 1, 2)
        if not torch.is_grad_enabled() and not torch.jit.is_tracing():
            # Without autograd, each level's rows are copied straight to their places. (Not in a
            # traced graph: ONNX's scatter takes an index per element, 12.5 M for 1000 RoIs.)
            rows = None
            for index, level_rows in self._pool_levels(features, rois, levels):
                if rows is None:
                    rows = level_rows.new_empty(
                        (rois.shape[0], *level_rows.shape[1:]), dtype=features[0].dtype
                    )
                rows.index_copy_(0, index, level_rows.to(rows.dtype))
            return rows.permute(0, 3, 1, 2)
        pooled, order = self._grouped_by_level(features, rois, levels)
        position = torch.empty_like(order)
        position[order] = torch.arange(order.shape[0], device=order.device)
        return pooled.index_select(0, position)

    def pool_by_level(self, features: list[Tensor], rois: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        """Like `forward`, with the RoIs grouped by level instead of in their given order.

        Returns pooled (K, C, S, S) channels-last and order (K,) int64: row i belongs to RoI
        order[i]. For the losses the order of the RoIs does not matter as long as their
        targets follow it; in training this saves putting the rows back in place (a gather
        in the forward, a zero-filled scatter-add in the backward, each over the whole
        pooled tensor: ~0.2 s per R50-FPN step at 800 px).
        """
        return self._grouped_by_level(features, *self._rois_and_levels(features, rois))

    def _grouped_by_level(
        self, features: list[Tensor], rois: Tensor, levels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """`pool_by_level` for RoIs and levels already computed."""
        if levels is None:
            everything = torch.arange(rois.shape[0], device=rois.device)
            return self._pool(features[0], rois, self.strides[0]).permute(0, 3, 1, 2), everything
        parts = self._pool_levels(features, rois, levels)
        dtype = features[0].dtype
        order = torch.cat([index for index, _ in parts])
        rows = torch.cat([level_rows.to(dtype) for _, level_rows in parts])
        return rows.permute(0, 3, 1, 2), order

    def _rois_and_levels(
        self, features: list[Tensor], rois: Tensor | list[Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """(K, 5) RoIs [image index, x1, y1, x2, y2] and (K,) their levels (None: one level)."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(features)}")
        dtype = torch.float64 if features[0].dtype == torch.float64 else torch.float32
        rois = rois_as_tensor(rois, dtype, features[0].device)
        if len(features) == 1:
            return rois, None
        levels = assign_fpn_levels(
            rois[:, 1:], self.levels[0], self.levels[-1], self.canonical_size, self.canonical_level
        )
        return rois, levels

    def _pool_levels(
        self, features: list[Tensor], rois: Tensor, levels: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Per level: (the indices of its RoIs (Kl,), their rows (Kl, S, S, C)). Every level is
        pooled, also one without RoIs: its map stays in the autograd graph (a zero gradient
        rather than none) and a traced model pools it whenever an image has RoIs there."""
        parts = []
        for level, level_features, stride in zip(self.levels, features, self.strides):
            index = torch.where(levels == level)[0]
            parts.append((index, self._pool(level_features, rois[index], stride)))
        return parts
