"""The fully connected mask head of the paper's Table 2e, the baseline the FCN head beats."""

from torch import Tensor, nn

from maskrcnn.modeling.mask_head import MaskHead
from maskrcnn.ops import MultiScaleRoIPooler


class MLPMaskHead(MaskHead):
    """pooled (K, C, S, S) -> fc fc_dim -> fc fc_dim (ReLU each) -> fc num_masks x 2S x 2S:
    (K, num_masks, 2S, 2S) logits (the paper: fc 1024, fc 1024, fc 80 x 28 x 28 on 14 x 14 RoIs).

    Flattening the RoI into a vector discards its spatial layout, which the FCN keeps; the
    table shows what that costs. The first layer reads the features in channels-last order
    (S, S, C), the order RoIAlign gives them in memory.
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        in_channels: int,
        num_classes: int,
        fc_dim: int = 1024,
        threshold: float = 0.5,
        loss: str = "sigmoid",
        roi_transform: nn.Module | None = None,
        resolution: int | None = None,
        paste: str = "torchvision",
    ):
        super().__init__(pooler, in_features, threshold, loss, roi_transform, paste)
        pooled = resolution or pooler.output_size  # the input's side S (after roi_transform)
        self.mask_size = 2 * pooled
        self.fc1 = nn.Linear(in_channels * pooled * pooled, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.num_masks_out = self.num_masks(num_classes, loss)
        self.predictor = nn.Linear(fc_dim, self.num_masks_out * self.mask_size**2)
        for layer in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(layer.weight, a=1)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def every_class_logits(self, x: Tensor) -> Tensor:
        hidden = self.fc2(self.fc1(x.permute(0, 2, 3, 1).flatten(1)).relu_()).relu_()
        logits = self.predictor(hidden).float()
        return logits.reshape(x.shape[0], self.num_masks_out, self.mask_size, self.mask_size)
