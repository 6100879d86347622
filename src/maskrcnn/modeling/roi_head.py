"""The interface every RoI head has: pooled features of RoIs -> raw outputs -> a loss or predictions.

`RoIHeads` samples RoIs and runs a list of these; a head (the mask head, the keypoint head,
a toy regressor) is added in the wiring function `build_model`, not inside `RoIHeads`.
"""

from torch import Tensor, nn

from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.structures import RoIs


class RoIHead(nn.Module):
    """A head that reads RoI features pooled by its own `pooler` from the backbone maps named
    `in_features`.

    Subclasses implement:
    - `forward(pooled, rois)`: pooled (K, C, S, S) features of the RoIs -> raw outputs;
    - `loss(raw, rois, targets)`: the head's named loss terms; `rois` carry the ground-truth
      labels and matches (`RoIs.matched`), `targets` the batch's annotations;
    - `predict(raw, rois)`: per-RoI outputs by name (D rows each), for RoIs that are detections
      (their labels are the predicted classes);
    - optionally `to_image(outputs, boxes, image_size, scale)`: those outputs for the original
      image (e.g. masks pasted into it); the default returns them unchanged.

    foreground_only: the head trains on the foreground RoIs of the sample (the mask and
    keypoint heads); False trains it on all of them (the box classifier).
    """

    foreground_only = True

    def __init__(self, pooler: MultiScaleRoIPooler, in_features: tuple[str, ...]):
        super().__init__()
        self.pooler = pooler
        self.in_features = tuple(in_features)

    def pool(self, features: dict[str, Tensor], rois: RoIs) -> Tensor:
        """(K, C, S, S) features of the RoIs, in their order."""
        return self.pooler([features[name] for name in self.in_features], rois.as_rows())

    def pool_by_level(self, features: dict[str, Tensor], rois: RoIs) -> tuple[Tensor, RoIs]:
        """Pooled features grouped by pyramid level and the RoIs in that same order (for the
        loss, where the order does not matter and putting rows back costs time)."""
        pooled, order = self.pooler.pool_by_level(
            [features[name] for name in self.in_features], rois.as_rows()
        )
        return pooled, rois[order]

    def to_image(
        self, outputs: dict[str, Tensor], boxes: Tensor, image_size: tuple[int, int], scale: Tensor
    ) -> dict[str, Tensor]:
        """outputs of one image's D detections -> what the user gets for them. boxes (D, 4) in the
        original image's pixels; image_size its (height, width); scale (2,) (x, y) from the
        model's input pixels to the original's."""
        return outputs
