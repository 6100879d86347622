"""The meta-architecture: preprocess -> backbone -> FPN -> RPN -> RoI heads -> postprocess."""

from dataclasses import replace

import torch
from torch import Tensor, nn

from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
from maskrcnn.config import ModelConfig
from maskrcnn.config_checks import check_model_config
from maskrcnn.data.images import to_image_tensor
from maskrcnn.modeling.anchors import AnchorGenerator
from maskrcnn.modeling.backbone import ResNet
from maskrcnn.modeling.box_head import BoxHead, BoxInference, BoxPredictor
from maskrcnn.modeling.fpn import FPN
from maskrcnn.modeling.mask_head import MaskHead, paste_masks
from maskrcnn.modeling.preprocess import Preprocessor
from maskrcnn.modeling.roi_heads import RoIHeads
from maskrcnn.modeling.rpn import RPN, RPNHead
from maskrcnn.modeling.weight_cache import inference_pass
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler
from maskrcnn.ops.matcher import Matcher
from maskrcnn.ops.sampler import BalancedSampler
from maskrcnn.precision import autocast_context
from maskrcnn.structures import Detections


class MaskRCNN(nn.Module):
    """Mask R-CNN with a ResNet/ResNeXt-FPN backbone.

    `predict` is the user-facing entry point; `forward` takes already-checked float
    tensors and returns the same detections.
    """

    def __init__(
        self,
        config: ModelConfig,
        preprocessor: Preprocessor,
        trunk: ResNet,
        fpn: FPN,
        rpn: RPN,
        roi_heads: RoIHeads,
    ):
        super().__init__()
        self.config = config
        self.preprocessor = preprocessor
        self.trunk = trunk
        self.fpn = fpn
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
        scores (D,), labels (D,) int64 and, with the mask branch, masks (D, Hi, Wi) bool.
        """
        image_list = self.preprocessor(images)
        with inference_pass(), autocast_context(precision, image_list.tensor.device):
            pyramid = self.features(image_list.tensor)
            rpn_outputs = self.rpn(pyramid, image_list.padded_size)
            proposals = self.rpn.predict(rpn_outputs, image_list.image_sizes)
            # P6 serves the RPN only; RoIs are pooled from P2-P5.
            detections = self.roi_heads.predict(
                pyramid[:-1], proposals, image_list.image_sizes, score_threshold
            )
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        return [
            self.postprocess(d, resized, original)
            for d, resized, original in zip(detections, image_list.image_sizes, original_sizes)
        ]

    def features(self, images: Tensor) -> list[Tensor]:
        """images (N, C, H, W) normalized and padded -> [P2, ..., P6], each (N, F, Hl, Wl).

        The pyramid is computed in channels-last layout: the CPU and GPU convolution
        kernels are fastest there, and RoIAlign reads channels-last features directly.
        """
        return self.fpn(self.trunk(images.contiguous(memory_format=torch.channels_last)))

    def losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The training objective L = L_cls + L_box + L_mask + the RPN's two terms.

        images: N tensors (C, Hi, Wi) float in [0, 1], already resized by the data
        pipeline (multi-scale training picks the size there); targets: per image boxes
        (G, 4) xyxy, labels (G,) int64 in 1..num_classes-1, masks (G, Hi, Wi).
        Returns the named loss terms; their sum is what is minimised.
        """
        image_list = self.preprocessor(images, resize=False)
        pyramid = self.features(image_list.tensor)
        rpn_outputs = self.rpn(pyramid, image_list.padded_size)
        gt_boxes = [t["boxes"] for t in targets]
        losses = self.rpn.loss(rpn_outputs, gt_boxes)
        proposals = self.rpn.predict(rpn_outputs, image_list.image_sizes)
        losses.update(self.roi_heads.loss(pyramid[:-1], proposals, targets))
        return losses

    def postprocess(
        self, detections: Detections, resized_size: tuple[int, int], original_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Map detections from the resized input back to the original image and paste masks."""
        ratio_h = original_size[0] / resized_size[0]
        ratio_w = original_size[1] / resized_size[1]
        scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], device=detections.boxes.device)
        boxes = detections.boxes * scale
        result = {"boxes": boxes, "scores": detections.scores, "labels": detections.labels}
        if detections.mask_probs is not None:
            result["masks"] = paste_masks(
                detections.mask_probs, boxes, original_size, self.config.roi_heads.mask_threshold
            )
        return result

    @torch.inference_mode()
    def predict(
        self,
        images,
        precision: str = "fp32",
        normalized: bool = False,
        score_threshold: float = PREDICT_SCORE_THRESHOLD,
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
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        config = replace(self.config.input, intensity="range") if normalized else self.config.input
        tensors = [
            to_image_tensor(image, config, f"images[{i}]").to(self.device) for i, image in enumerate(images)
        ]
        if not tensors:
            return []
        was_training = self.training
        self.eval()
        try:
            return self(tensors, precision, score_threshold)
        finally:
            self.train(was_training)


def build_model(config: ModelConfig) -> MaskRCNN:
    """Wire Mask R-CNN from its config, following the paper's Figure 1 and FPN's design."""
    check_model_config(config)  # before any layer is sized by it
    trunk = ResNet(config.backbone, in_channels=config.input.channels)
    fpn = FPN(trunk.out_channels, config.backbone.fpn_channels)
    channels = fpn.out_channels
    anchors = AnchorGenerator(config.anchors, num_levels=len(fpn.strides))
    rpn = RPN(config.rpn, anchors, RPNHead(channels, anchors.num_anchors_per_location))

    heads = config.roi_heads
    pooler_strides = fpn.strides[:-1]
    box_pooler = MultiScaleRoIPooler(
        heads.box_resolution, pooler_strides, heads.sampling_ratio, heads.aligned, heads.pooler
    )
    box_head = BoxHead(channels, heads.box_resolution, heads.fc_dim)
    box_predictor = BoxPredictor(box_head.out_features, config.num_classes)
    box_inference = BoxInference(
        BoxCoder(heads.box_weights), heads.score_threshold, heads.nms_threshold, heads.detections_per_image
    )
    mask_pooler = mask_head = None
    if config.masks:
        mask_pooler = MultiScaleRoIPooler(
            heads.mask_resolution, pooler_strides, heads.sampling_ratio, heads.aligned, heads.pooler
        )
        mask_head = MaskHead(channels, config.num_classes, heads.mask_conv_dim, heads.mask_num_convs)
    roi_heads = RoIHeads(
        box_pooler,
        box_head,
        box_predictor,
        box_inference,
        Matcher(heads.foreground_iou, heads.foreground_iou),
        BalancedSampler(heads.batch_size_per_image, heads.positive_fraction),
        mask_pooler,
        mask_head,
    )
    model = MaskRCNN(config, Preprocessor(config.input), trunk, fpn, rpn, roi_heads)
    # Convolution weights in the layout the features use: no reorder on every call.
    return model.to(memory_format=torch.channels_last)
