"""Mask head: a small network on each RoI predicting an m x m mask per class (or one for all),
its targets and loss; the predicted class's mask is pasted back into the image by
`paste.paste_masks`."""

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.choices import MASK_LOSSES, MASK_PASTES
from maskrcnn.fast_path_switch import fast_paths_enabled, ran
from maskrcnn.modeling.paste import paste_masks
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.ops.conv import Conv2d
from maskrcnn.ops.roi_align import axis_sampling
from maskrcnn.structures import RoIs


class MaskHead(RoIHead, metaclass=abc.ABCMeta):
    """The mask branch: pooled RoI features (K, C, S, S) -> mask logits, their loss, and each
    detection's mask probabilities, pasted into the image by `to_image`.

    Subclasses give the logits of every class (`every_class_logits`) and, where they can do it
    cheaper, those of one class per RoI (`class_logits`): the FCN of the paper's Figure 4
    (`FCNMaskHead`) and the fully connected baseline of Table 2e (`mlp_mask_head.MLPMaskHead`).

    loss (Table 2b): "sigmoid", the paper's: one mask per class, only the RoI's class's mask
    trained, by a per-pixel sigmoid, so that classes do not compete; "softmax": a per-pixel
    softmax across the classes (background included) on every class's mask; "agnostic": one
    mask for all classes, by a per-pixel sigmoid.
    roi_transform: a module run on the pooled features first, held by reference (C4: the box
    head's res5, whose weights the box head owns; a submodule here would store them twice).
    paste: how `to_image` resizes the masks into their boxes (model.roi_heads.mask_paste,
    `paste.paste_masks`' mode).
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        threshold: float = 0.5,
        loss: str = "sigmoid",
        roi_transform: nn.Module | None = None,
        paste: str = "torchvision",
    ):
        super().__init__(pooler, in_features)
        if loss not in MASK_LOSSES:
            raise ValueError(f"mask loss must be one of {', '.join(MASK_LOSSES)}, got {loss!r}")
        if paste not in MASK_PASTES:
            raise ValueError(f"mask paste must be one of {', '.join(MASK_PASTES)}, got {paste!r}")
        self.threshold = threshold
        self.loss_kind = loss
        self.paste = paste
        # In a tuple: not registered, so neither state_dict nor parameters() list it twice.
        self._roi_transform = (roi_transform,) if roi_transform is not None else ()

    @staticmethod
    def num_masks(num_classes: int, loss: str) -> int:
        """Masks predicted per RoI: one per class (background's unused by the sigmoid loss), or one."""
        return 1 if loss == "agnostic" else num_classes

    def forward(self, pooled: Tensor, rois: RoIs) -> Tensor:
        """(K, C, S, S), rois with labels (K,) -> float32 mask logits: (K, M, M) of each RoI's
        class (sigmoid), of the one mask (agnostic), or (K, num_classes, M, M) of every class
        (softmax)."""
        x = pooled
        for transform in self._roi_transform:
            x = transform(x)
        if self.loss_kind == "softmax":
            return self.every_class_logits(x)
        labels = rois.labels if self.loss_kind == "sigmoid" else torch.zeros_like(rois.labels)
        return self.class_logits(x, labels)

    @abc.abstractmethod
    def every_class_logits(self, x: Tensor) -> Tensor:
        """(K, C, S, S) -> (K, num_masks, M, M) float32."""

    def class_logits(self, x: Tensor, labels: Tensor) -> Tensor:
        """(K, C, S, S), labels (K,) -> (K, M, M) float32 logits of mask `labels[k]` of each RoI."""
        every_class = self.every_class_logits(x)
        return every_class[torch.arange(labels.shape[0], device=labels.device), labels]

    def loss(self, raw: Tensor, rois: RoIs, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """raw: `forward`'s logits of the foreground RoIs; targets' masks (G, H, W) in the padded
        input's pixels. Returns {"loss_mask": L_mask}."""
        gt_masks = [t["masks"] for t in targets]
        target = mask_targets(gt_masks, rois.image_index, rois.matched, rois.boxes, raw.shape[-1])
        if self.loss_kind == "softmax":
            return {"loss_mask": softmax_mask_loss(raw, target, rois.labels)}
        return {"loss_mask": mask_loss(raw, target)}

    def predict(self, raw: Tensor, rois: RoIs) -> dict[str, Tensor]:
        """{"mask_probs": (D, M, M) probabilities of each detection's class (or of the one mask)}."""
        if self.loss_kind == "softmax":
            rows = torch.arange(rois.labels.shape[0], device=raw.device)
            return {"mask_probs": raw.softmax(dim=1)[rows, rois.labels]}
        return {"mask_probs": raw.sigmoid()}

    def to_image(
        self, outputs: dict[str, Tensor], boxes: Tensor, image_size: tuple[int, int], scale: Tensor
    ) -> dict[str, Tensor]:
        """{"masks": (D, H, W) bool}: each mask pasted into its box and binarized."""
        return {"masks": paste_masks(outputs["mask_probs"], boxes, image_size, self.threshold, self.paste)}


class FCNMaskHead(MaskHead):
    """The paper's FCN mask head (Figure 4): (K, C, S, S) -> `num_convs` 3x3 convs with ReLU ->
    a 2x2 stride-2 transposed conv with ReLU -> a 1x1 conv giving each mask: (K, ., 2S, 2S).

    With C4 (`roi_transform` res5, no 3x3 convs) this is Figure 4's left head, with FPN
    (4 convs) its right one.
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        in_channels: int,
        num_classes: int,
        conv_dim: int = 256,
        num_convs: int = 4,
        threshold: float = 0.5,
        loss: str = "sigmoid",
        roi_transform: nn.Module | None = None,
        paste: str = "torchvision",
    ):
        super().__init__(pooler, in_features, threshold, loss, roi_transform, paste)
        convs = []
        for index in range(num_convs):
            convs.append(Conv2d(in_channels if index == 0 else conv_dim, conv_dim, 3, padding=1))
        self.convs = nn.ModuleList(convs)
        self.deconv = nn.ConvTranspose2d(conv_dim if num_convs else in_channels, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, self.num_masks(num_classes, loss), kernel_size=1)
        for layer in [*self.convs, self.deconv]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def every_class_logits(self, x: Tensor) -> Tensor:
        return self.predictor(self.mask_features(x)).float()

    def class_logits(self, x: Tensor, labels: Tensor) -> Tensor:
        """`predictor(features)[arange(K), labels]`, computing that one mask only.

        The 1x1 predictor becomes one (2S*2S, D) x (D, 1) product per RoI instead of a
        convolution producing every class: num_classes times fewer multiply-adds, and in
        training no mostly-zero (K, num_classes, 2S, 2S) gradient.
        """
        if not fast_paths_enabled():
            return super().class_logits(x, labels)
        ran("mask_labelled_class_only")
        features = self.mask_features(x)
        num, depth, height, width = features.shape
        # weight (classes, D, 1, 1) -> (classes, 1, 1, D) -> (classes, D): a view of the
        # channels-last weight whose gradient autograd hands back channels-last, in the
        # parameter's own strides (indexing the 4-d weight gives an NCHW-strided one, which
        # DDP must copy into its channels-last bucket view, warning that the strides differ).
        classes = self.predictor.weight.permute(0, 2, 3, 1).reshape(-1, depth)
        weight = classes[labels].reshape(num, depth, 1).to(features.dtype)
        # features are channels-last, so these rows are a view
        rows = features.permute(0, 2, 3, 1).reshape(num, height * width, depth)
        logits = torch.bmm(rows, weight).reshape(num, height, width).float()
        return logits + self.predictor.bias[labels].float()[:, None, None]

    def mask_features(self, pooled: Tensor) -> Tensor:
        """(K, C, S, S) -> (K, D, 2S, 2S) features before the per-class predictor."""
        x = pooled
        for conv in self.convs:
            x = conv(x).relu_()
        if not fast_paths_enabled():
            return self.deconv(x).relu_()
        ran("mask_upsample_product")
        return upsample_2x2(self.deconv, x, relu=True)


def upsample_2x2(deconv: nn.ConvTranspose2d, x: Tensor, relu: bool = False) -> Tensor:
    """deconv(x) (relu(deconv(x)) with `relu`) for a 2x2 stride-2 transposed conv:
    (K, C, S, S) -> (K, D, 2S, 2S).

    Its output windows do not overlap, so it is one matrix product (K*S*S, C) @ (C, D*4)
    followed by a reshuffle of the 2x2 blocks, several times faster than the generic
    transposed-convolution kernel on the CPU. The result is channels-last.
    """
    num, channels, size_h, size_w = x.shape
    out_channels = deconv.out_channels
    rows = x.permute(0, 2, 3, 1).reshape(-1, channels)
    # weight (C, D, 2, 2) -> (C, 2, 2, D): each input cell gives its 2x2 block, channels last
    weight = deconv.weight.permute(0, 2, 3, 1).reshape(channels, 4 * out_channels)
    blocks = (rows @ weight).view(num, size_h, size_w, 2, 2, out_channels) + deconv.bias
    if relu:
        # In place here, not on the permuted result: on a view, autograd would rebuild the
        # whole tensor in the backward and hand the ReLU an NCHW-ordered gradient.
        blocks.relu_()
    out = blocks.permute(0, 1, 3, 2, 4, 5).reshape(num, 2 * size_h, 2 * size_w, out_channels)
    return out.permute(0, 3, 1, 2)


def mask_targets(
    gt_masks: list[Tensor], image_index: Tensor, matched: Tensor, boxes: Tensor, size: int
) -> Tensor:
    """Crop each RoI's ground-truth mask to the RoI and resample it to size x size.

    gt_masks: per image (Gi, Hi, Wi) instance masks (uint8/bool/float; images may differ in
    size); image_index, matched: (K,) each RoI's image and the instance it is matched to
    there; boxes: (K, 4) xyxy RoIs in the same pixels. Returns (K, size, size) float in [0, 1].

    The resampling is RoIAlign with adaptive sampling (every mask pixel under a bin
    counts, as in torchvision's targets). Bilinear sampling and bin averaging are
    separable, so each target is Wy @ window @ Wx^T with small dense weight matrices over
    a window of the mask around the RoI: the cost follows the box, not the image. The
    images' masks are read from one flat buffer, each RoI through the offset, height and
    width of its own mask.
    """
    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.zeros((0, size, size), device=device)
    mask_sizes = [m[0].numel() if len(m) else 0 for m in gt_masks]
    starts = torch.tensor([0, *[len(m) * n for m, n in zip(gt_masks, mask_sizes)]], device=device).cumsum(0)
    flat = torch.cat([m.reshape(-1) for m in gt_masks])
    per_roi = image_index
    heights = torch.tensor([m.shape[-2] for m in gt_masks], device=device)[per_roi]
    widths = torch.tensor([m.shape[-1] for m in gt_masks], device=device)[per_roi]
    base = starts[per_roi] + matched * heights * widths
    boxes = boxes.to(torch.float32)
    # Windows start a cell before the box and end two after it, so that every bilinear
    # tap of the box's samples falls inside; rows past the image repeat its last row.
    # (A box starting past its mask's edge reads the last row/column, with zero weight.)
    y0 = torch.minimum(boxes[:, 1].floor() - 1, heights - 1).clamp(min=0)
    x0 = torch.minimum(boxes[:, 0].floor() - 1, widths - 1).clamp(min=0)
    window_h = int((boxes[:, 3].ceil() + 3 - y0).max().clamp(min=1))
    window_w = int((boxes[:, 2].ceil() + 3 - x0).max().clamp(min=1))
    row_weights = _window_weights(boxes[:, 1] - y0, boxes[:, 3] - y0, size, window_h, heights - y0)
    col_weights = _window_weights(boxes[:, 0] - x0, boxes[:, 2] - x0, size, window_w, widths - x0)

    targets = []
    chunk = max(1, (1 << 24) // (window_h * window_w))
    steps_y = torch.arange(window_h, device=device)
    steps_x = torch.arange(window_w, device=device)
    for begin in range(0, len(boxes), chunk):
        part = slice(begin, begin + chunk)
        rows = torch.minimum(y0[part, None].long() + steps_y, heights[part, None] - 1)
        cols = torch.minimum(x0[part, None].long() + steps_x, widths[part, None] - 1)
        index = base[part, None, None] + rows[:, :, None] * widths[part, None, None] + cols[:, None, :]
        windows = flat[index].to(torch.float32)
        targets.append(row_weights[part] @ windows @ col_weights[part].transpose(1, 2))
    return torch.cat(targets)


def _window_weights(start: Tensor, end: Tensor, bins: int, window: int, extent: Tensor) -> Tensor:
    """Dense (K, bins, window) RoIAlign weights along one axis (aligned=False, adaptive grid)."""
    length = (end - start).clamp(min=1.0)
    grid = torch.ceil(length / bins).long()
    indices, weights = axis_sampling(start, length, bins, grid, extent)
    dense = torch.zeros((len(start), bins, window), dtype=weights.dtype, device=weights.device)
    return dense.scatter_add_(2, indices.clamp(max=window - 1), weights)


def softmax_mask_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """mask_logits (K, num_classes, M, M) of every class; targets (K, M, M) in [0, 1]; labels (K,)
    each RoI's ground-truth class.

    Table 2b's multinomial alternative: each pixel is one softmax over the classes, whose
    answer is the RoI's class inside its object (target >= 0.5) and the background (class 0)
    outside, so the classes compete for every pixel.
    """
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    pixel_class = torch.where(targets >= 0.5, labels[:, None, None], torch.zeros_like(labels)[:, None, None])
    return F.cross_entropy(mask_logits, pixel_class)


def mask_loss(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """mask_logits (K, M, M): each foreground RoI's mask logits for its ground-truth class
    (`MaskHead.forward`); targets (K, M, M) in [0, 1].

    Per-pixel sigmoid binary cross-entropy on the ground-truth class's mask alone: the
    other classes' masks get no gradient, so classes do not compete (the paper's L_mask).
    """
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(mask_logits, targets)
