"""The box head of the ResNet C4 and C5 models (the paper's Figure 4, left)."""

from torch import Tensor, nn

from maskrcnn.modeling.box_head import BoxHead
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler


class Res5BoxHead(BoxHead):
    """pooled (K, C, S, S) -> res5 (C4: on the RoIs, S/2 x S/2 out; C5: none, the features are
    res5's already) -> global average pooling -> the class and box predictors.

    In C4 the trunk's last stage is the head: the RoIs are pooled 14 x 14 from res4 and res5
    runs on each, as the original Faster R-CNN ResNet did. `res5` is this head's own module
    (checkpoint keys `roi_heads.box_head.res5.*`); the C4 mask head runs the same module on
    its RoIs (`MaskHead(roi_transform=...)`) without holding a copy of its weights.
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        res5: nn.Module | None,
        out_channels: int,
        num_classes: int,
        box_coder: BoxCoder,
        **inference,
    ):
        super().__init__(pooler, in_features, out_channels, num_classes, box_coder, **inference)
        self.res5 = res5

    def box_features(self, pooled: Tensor) -> Tensor:
        """(K, C, S, S) -> (K, out_channels)."""
        features = self.res5(pooled) if self.res5 is not None else pooled
        return features.mean(dim=(2, 3))
