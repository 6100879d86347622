"""The meta-architecture: preprocess -> backbone -> RPN -> RoI heads -> postprocess."""

from dataclasses import replace

import torch
from torch import Tensor, nn

from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
from maskrcnn.config import ModelConfig
from maskrcnn.config_checks import check_model_config
from maskrcnn.data.images import to_image_tensor
from maskrcnn.modeling.anchors import AnchorGenerator
from maskrcnn.modeling.backbone import ResNet, SingleMapBackbone, res5_stage
from maskrcnn.modeling.box_head import FCBoxHead
from maskrcnn.modeling.fpn import FPN, RPN_ONLY_FEATURES
from maskrcnn.modeling.keypoint_head import KeypointHead
from maskrcnn.modeling.mask_head import FCNMaskHead
from maskrcnn.modeling.mlp_mask_head import MLPMaskHead
from maskrcnn.modeling.preprocess import Preprocessor
from maskrcnn.modeling.res5_box_head import Res5BoxHead
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.modeling.roi_heads import RoIHeads
from maskrcnn.modeling.rpn import RPN, RPNHead
from maskrcnn.modeling.tiling import DEFAULT_TILE_BATCH, check_tiling, predict_tiled
from maskrcnn.modeling.weight_cache import inference_pass
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler
from maskrcnn.ops.matcher import Matcher
from maskrcnn.ops.sampler import BalancedSampler
from maskrcnn.precision import autocast_context
from maskrcnn.structures import Detections

# Checkpoint keys of earlier versions -> today's (the trunk and FPN became one backbone
# module, the box predictor part of the box head). Applied to every checkpoint read.
LEGACY_KEY_PREFIXES = (
    ("trunk.", "backbone.trunk."),
    ("fpn.", "backbone."),
    ("roi_heads.box_predictor.", "roi_heads.box_head."),
)


def upgrade_state_dict(state_dict: dict) -> dict:
    """A state dict of this project, of any version, under today's keys (unchanged if current)."""
    upgraded = {}
    for key, value in state_dict.items():
        for old, new in LEGACY_KEY_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        upgraded[key] = value
    return upgraded


class MaskRCNN(nn.Module):
    """Mask R-CNN: a backbone with named feature maps (`output_shape()`), the RPN and the RoI
    heads.

    `predict` is the user-facing entry point; `forward` takes already-checked float
    tensors and returns the same detections. Traced with one image, `forward` is the
    exported graph (export/onnx.py): sizes and counts stay tensors throughout.
    """

    def __init__(
        self,
        config: ModelConfig,
        preprocessor: Preprocessor,
        backbone: nn.Module,
        rpn: RPN,
        roi_heads: RoIHeads,
    ):
        super().__init__()
        self.config = config
        self.preprocessor = preprocessor
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.config.class_names
        return names if names else tuple(f"class_{i}" for i in range(self.config.num_classes))

    def forward(
        self, images: list[Tensor], precision: str = "fp32", score_threshold: float = 0.0
    ) -> list[dict[str, Tensor]]:
        """images: N tensors (C, Hi, Wi) float in [0, 1] (normalized as `to_image_tensor` does) on
        the model's device.
        precision: "fp32", or "bf16" / "fp16" / "auto" to run the networks under autocast
        (boxes, scores and masks are still decoded in float32). score_threshold: detections
        scoring lower are left out (0: all that pass the box head's roi_heads.score_threshold).

        Returns per image a dict with boxes (D, 4) float xyxy in that image's pixels,
        scores (D,), labels (D,) int64 and what the other heads give (with the mask head,
        masks (D, Hi, Wi) bool).
        """
        image_list = self.preprocessor(images)
        with inference_pass(), autocast_context(precision, image_list.tensor.device):
            features = self.backbone(image_list.tensor)
            rpn_outputs = self.rpn(features, image_list.padded_size)
            proposals = self.rpn.predict(rpn_outputs, image_list.image_sizes)
            detections = self.roi_heads.predict(features, proposals, image_list.image_sizes, score_threshold)
        return [
            self.postprocess(d, resized, image)
            for d, resized, image in zip(detections, image_list.image_sizes, images)
        ]

    def losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The training objective L = L_cls + L_box + L_mask + the RPN's two terms (+ the terms
        of any other head).

        images: N tensors (C, Hi, Wi) float in [0, 1], already resized by the data
        pipeline (multi-scale training picks the size there); targets: per image boxes
        (G, 4) xyxy, labels (G,) int64 in 1..num_classes-1, masks (G, Hi, Wi).
        Returns the named loss terms; their sum is what is minimised.
        """
        image_list = self.preprocessor(images, resize=False)
        features = self.backbone(image_list.tensor)
        rpn_outputs = self.rpn(features, image_list.padded_size)
        losses = self.rpn.loss(rpn_outputs, [t["boxes"] for t in targets])
        proposals = self.rpn.predict(rpn_outputs, image_list.image_sizes)
        losses.update(self.roi_heads.loss(features, proposals, targets))
        return losses

    def postprocess(
        self, detections: Detections, resized_size: Tensor, original_image: Tensor
    ) -> dict[str, Tensor]:
        """Map detections from the resized input (resized_size (2,) int64) back to the original
        image (C, H, W) and let each head turn its outputs into the image's."""
        # The shape as a tensor: a traced size stays a graph value (torch.as_tensor of it would not).
        original = torch._shape_as_tensor(original_image)[-2:]
        original_size = original_image.shape[-2:]
        ratio = original.to(torch.float32) / resized_size.to(torch.float32)
        scale = ratio.flip(0).to(detections.boxes.device)  # (x, y)
        boxes = detections.boxes * scale.repeat(2)
        result = {"boxes": boxes, "scores": detections.scores, "labels": detections.labels}
        outputs = detections.outputs
        for head in self.roi_heads.heads.values():
            result.update(head.to_image(outputs, boxes, original_size, scale))
        return result

    @torch.inference_mode()
    def predict(
        self,
        images,
        precision: str = "fp32",
        normalized: bool = False,
        score_threshold: float = PREDICT_SCORE_THRESHOLD,
        tile: int | None = None,
        tile_overlap: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
    ) -> list[dict[str, Tensor]]:
        """Detect objects in a list of images (or a single image).

        score_threshold: detections scoring lower are left out; the default (0.5) is also the
        `maskrcnn predict` and `maskrcnn export` default. Evaluation passes 0, keeping every
        detection above the box head's `roi_heads.score_threshold` (0.05), as COCO AP needs.

        precision: "fp32" (default), "bf16" (fast on CPUs with bfloat16 instructions, slow
        elsewhere), "fp16" (CUDA) or "auto" (fp16 on CUDA; on the CPU bf16 where it is
        fast, else fp32): see `forward`.

        images: tensors (C, H, W) or (H, W), numpy arrays (H, W, C) or (H, W), or PIL images,
        of any integer or float type; sizes may differ. Their intensities are normalized as
        the model's `config.input` says (`data.images.to_image_tensor`: uint8 divided by 255,
        float tensors in [0, 1] as they are, 16-bit by percentiles under the default "auto").
        normalized=True: the images are already the model's input (float (C, H, W) in [0, 1],
        e.g. from a `CocoDataset` built with this model's config): checked, not normalized again.
        Raises ValueError on bad input.
        Returns one dict per image: boxes (N, 4) float xyxy in that image's pixels,
        scores (N,), labels (N,) int64 and masks (N, H, W) bool.

        tile: cut each image into `tile` x `tile` pixel tiles overlapping by `tile_overlap`
        (default 128 pixels, or half a tile if that is less),
        detect in each (`tile_batch` tiles at a time, each resized as any input of its size)
        and merge what the tiles share (modeling/tiling.py): for images far larger than
        `input.max_size`, whose small objects would vanish in the resize. The image stays in
        host memory; the results are CPU tensors and the masks a `BoxMasks` (each mask the crop
        of its window; `masks[i]` is mask i at full size). An image no larger than a tile is one
        tile: the same detections as without tiling.
        """
        if tile is not None or tile_overlap is not None:
            check_tiling(tile, tile_overlap)
        if not isinstance(images, (list, tuple)):
            images = [images]
        config = replace(self.config.input, intensity="range") if normalized else self.config.input
        # Tiled images stay in host memory; only the tiles of a batch go to the device.
        device = self.device if tile is None else torch.device("cpu")
        tensors = [
            to_image_tensor(image, config, f"images[{i}]").to(device) for i, image in enumerate(images)
        ]
        if not tensors:
            return []
        was_training = self.training
        self.eval()
        try:
            if tile is None:
                return self(tensors, precision, score_threshold)
            return [
                predict_tiled(self, t, tile, tile_overlap, precision, score_threshold, tile_batch)
                for t in tensors
            ]
        finally:
            self.train(was_training)


def build_backbone(config: ModelConfig) -> nn.Module:
    """The trunk and what the RPN and RoI heads read from it (`model.backbone.kind`): FPN's
    P2-P6, C4's res4 or C5's res5."""
    trunk = config.backbone
    channels = config.input.channels
    if trunk.kind == "fpn":
        return FPN(ResNet(trunk, in_channels=channels), trunk.fpn_channels)
    if trunk.kind == "c4":
        return SingleMapBackbone(ResNet(trunk, stages=3, in_channels=channels), "res4")
    return SingleMapBackbone(ResNet(trunk, stages=4, in_channels=channels), "res5")


def build_model(config: ModelConfig, extra_heads: dict[str, RoIHead] | None = None) -> MaskRCNN:
    """Wire Mask R-CNN from its config, following the paper's Figure 1 and 4 and FPN's design.

    extra_heads: further RoI heads by name (e.g. a keypoint head), run after the box and
    mask heads on the same RoIs; each reads the backbone maps its `in_features` names.
    """
    check_model_config(config)  # before any layer is sized by it
    backbone = build_backbone(config)
    shapes = backbone.output_shape()

    rpn_features = tuple(shapes)
    anchors = AnchorGenerator(config.anchors, tuple(shapes[name].stride for name in rpn_features))
    channels = shapes[rpn_features[0]].channels
    rpn_head = RPNHead(channels, anchors.num_anchors_per_location)
    rpn = RPN(config.rpn, anchors, rpn_head, rpn_features)

    heads = config.roi_heads
    roi_features = tuple(name for name in shapes if name not in RPN_ONLY_FEATURES)

    def pooler(resolution: int) -> MultiScaleRoIPooler:
        strides = tuple(shapes[name].stride for name in roi_features)
        return MultiScaleRoIPooler(resolution, strides, heads.sampling_ratio, heads.aligned, heads.pooler)

    inference = {
        "score_threshold": heads.score_threshold,
        "nms_threshold": heads.nms_threshold,
        "detections_per_image": heads.detections_per_image,
    }
    coder = BoxCoder(heads.box_weights)
    if config.backbone.kind == "fpn":  # Figure 4, right: 2 fc for boxes, 4 convs for masks
        box_head = FCBoxHead(
            pooler(heads.box_resolution),
            roi_features,
            channels,
            config.num_classes,
            coder,
            heads.fc_dim,
            **inference,
        )
        res5, mask_channels = None, channels
        mask_convs, mask_side = heads.mask_num_convs, heads.mask_resolution
    else:  # Figure 4, left: res5 (C4 runs it on the RoIs) and average pooling for boxes
        res5 = res5_stage(config.backbone) if config.backbone.kind == "c4" else None
        mask_channels = config.backbone.stage_channels[3]
        box_head = Res5BoxHead(
            pooler(heads.box_resolution),
            roi_features,
            res5,
            mask_channels,
            config.num_classes,
            coder,
            **inference,
        )
        # res5's first block has stride 2: the mask head sees half the pooled side
        mask_convs = 0
        mask_side = (heads.mask_resolution + 1) // 2 if res5 is not None else heads.mask_resolution
    other_heads: dict[str, RoIHead] = {}
    if config.masks:
        mask = {
            "threshold": heads.mask_threshold,
            "loss": heads.mask_loss,
            "roi_transform": res5,
            "paste": heads.mask_paste,
        }
        if heads.mask_head == "mlp":  # Table 2e's baseline
            other_heads["mask"] = MLPMaskHead(
                pooler(heads.mask_resolution),
                roi_features,
                mask_channels,
                config.num_classes,
                heads.mask_fc_dim,
                resolution=mask_side,
                **mask,
            )
        else:
            other_heads["mask"] = FCNMaskHead(
                pooler(heads.mask_resolution),
                roi_features,
                mask_channels,
                config.num_classes,
                heads.mask_conv_dim,
                mask_convs,
                **mask,
            )
    if config.keypoints:  # the paper's section 5: K one-hot masks per RoI
        keypoint = config.keypoint_head
        other_heads["keypoint"] = KeypointHead(
            pooler(keypoint.resolution),
            roi_features,
            channels,
            keypoint.num_keypoints,
            keypoint.conv_dim,
            keypoint.num_convs,
        )
    other_heads.update(extra_heads or {})
    roi_heads = RoIHeads(
        box_head,
        other_heads,
        Matcher(heads.foreground_iou, heads.foreground_iou),
        BalancedSampler(heads.batch_size_per_image, heads.positive_fraction),
    )
    model = MaskRCNN(config, Preprocessor(config.input), backbone, rpn, roi_heads)
    # Convolution weights in the layout the features use: no reorder on every call.
    return model.to(memory_format=torch.channels_last)
