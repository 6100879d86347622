"""The meta-architecture: preprocess -> backbone -> RPN -> RoI heads -> postprocess."""

import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn

from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
from maskrcnn.config import ModelConfig
from maskrcnn.data.images import to_image_tensor
from maskrcnn.modeling.preprocess import Preprocessor
from maskrcnn.modeling.roi_heads import RoIHeads
from maskrcnn.modeling.rpn import RPN
from maskrcnn.modeling.tiling import DEFAULT_TILE_BATCH, check_tiling, predict_tiled
from maskrcnn.modeling.weight_cache import inference_pass
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


class DetectionCapWarning(UserWarning):
    """An image's detections reached `roi_heads.detections_per_image`: more may have been cut."""


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
                results = self(tensors, precision, score_threshold)
                self._warn_if_capped(results)
                return results
            return [
                predict_tiled(self, t, tile, tile_overlap, precision, score_threshold, tile_batch)
                for t in tensors
            ]
        finally:
            self.train(was_training)

    def set_detections_per_image(self, count: int) -> None:
        """The most detections an image (a tile, with tiling) keeps: `roi_heads.detections_per_image`."""
        if count < 1:
            raise ValueError(f"detections per image: expected a whole number >= 1, got {count}")
        self.roi_heads.box_head.detections_per_image = count
        self.config = replace(
            self.config, roi_heads=replace(self.config.roi_heads, detections_per_image=count)
        )

    def _warn_if_capped(self, results: list[dict[str, Tensor]]) -> None:
        # Once per process (Python shows a warning of the same text and place once): cells,
        # bacteria and crowds have more than the COCO cap of 100 objects per image. Counted at
        # the prediction threshold: evaluation keeps low scores too, and a COCO model fills its
        # 100 places with them on almost any image.
        cap = self.roi_heads.box_head.detections_per_image
        if any(int((r["scores"] >= PREDICT_SCORE_THRESHOLD).sum()) >= cap for r in results):
            warnings.warn(
                f"an image has {cap} detections, as many as roi_heads.detections_per_image allows: it "
                "may hold more objects; raise the cap (predict and serve: --max-detections N; train "
                "and eval: roi_heads.detections_per_image=N)",
                DetectionCapWarning,
                stacklevel=3,
            )
