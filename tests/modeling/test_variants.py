"""The designs of the paper's Table 2, each a config value: every one builds, trains, predicts,
exports and survives a save and a load; the packaged paper configs build the paper's models."""

from pathlib import Path

import pytest
import torch
import torchvision

from maskrcnn import build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.config import ModelConfig, config_from_dict, config_to_dict, load_config, merge
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.mask_head import FCNMaskHead
from maskrcnn.modeling.res5_box_head import Res5BoxHead
from maskrcnn.testing import tiny_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "maskrcnn" / "configs"
C4 = {"backbone": {"kind": "c4"}, "roi_heads": {"box_resolution": 14, "mask_resolution": 14}}
C5 = {"backbone": {"kind": "c5"}, "roi_heads": {"box_resolution": 7, "mask_resolution": 7}}
KEYPOINTS = {"num_keypoints": 4, "conv_dim": 16, "num_convs": 2}
VARIANTS = {
    "c4": C4,
    "c5": C5,
    "c5 roipool": merge(C5, {"roi_heads": {"pooler": "pool"}}),
    "softmax mask loss": {"roi_heads": {"mask_loss": "softmax"}},
    "class-agnostic mask": {"roi_heads": {"mask_loss": "agnostic"}},
    "mlp mask head": {"roi_heads": {"mask_head": "mlp", "mask_fc_dim": 48}},
    "c4 softmax": merge(C4, {"roi_heads": {"mask_loss": "softmax"}}),
    "c4 align_max": merge(C4, {"roi_heads": {"pooler": "align_max"}}),
    "c4 warp": merge(C4, {"roi_heads": {"pooler": "warp"}}),
    "fpn warp_max": {"roi_heads": {"pooler": "warp_max"}},
    "keypoints and masks": {"keypoints": True, "keypoint_head": KEYPOINTS},
    "c4 keypoints only": merge(C4, {"masks": False, "keypoints": True, "keypoint_head": KEYPOINTS}),
}


def variant_config(changes: dict) -> ModelConfig:
    base = config_to_dict(tiny_model_config())
    base["backbone"]["norm"] = "frozen_bn"  # pre-trained models' norm, folded when exported
    return config_from_dict(ModelConfig, merge(base, changes))


def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two images with three objects, their boxes, labels, masks and keypoints."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 80, generator=generator), torch.rand(3, 72, 64, generator=generator)]
    first = torch.zeros(2, 64, 80)
    first[0, 10:30, 10:40] = 1
    first[1, 30:60, 40:70] = 1
    second = torch.zeros(1, 72, 64)
    second[0, 5:50, 5:30] = 1
    for image, masks in zip(images, (first, second)):
        image[:, masks.amax(0) > 0] += 0.5  # objects brighter than the background
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 40, 30], [40, 30, 70, 60]]),
            "labels": torch.tensor([1, 2]),
            "masks": first,
        },
        {"boxes": torch.tensor([[5.0, 5, 30, 50]]), "labels": torch.tensor([2]), "masks": second},
    ]
    for target in targets:  # 4 keypoints per object: its corners, the last one not labelled
        x1, y1, x2, y2 = target["boxes"].unbind(1)
        corners = torch.stack([torch.stack(p, 1) for p in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 1)
        visibility = torch.tensor([2.0, 2.0, 1.0, 0.0]).expand(len(x1), 4)[..., None]
        target["keypoints"] = torch.cat((corners, visibility), dim=-1)
    return [image.clamp(0, 1) for image in images], targets


@pytest.mark.parametrize("name", VARIANTS, ids=list(VARIANTS))
def test_a_variant_trains_predicts_exports_and_reloads(name, tmp_path):
    from maskrcnn.export.onnx import compare_with_eager, export_onnx, onnx_session

    torch.manual_seed(0)
    model = build_model(variant_config(VARIANTS[name]))
    images, targets = batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    model.train()
    totals, head_losses = [], []
    for _ in range(10):
        losses = model.losses(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        # the keypoint loss starts near log(56 * 56) and falls slowly: checked on its own below
        totals.append(total.item() - losses.get("loss_keypoint", torch.zeros(())).item())
        head_losses.append(losses.get("loss_mask", losses.get("loss_keypoint")).item())
    assert sum(totals[-3:]) < 0.9 * sum(totals[:3]), totals
    assert min(head_losses[-3:]) < head_losses[0], head_losses

    (result,) = model.predict(images[0], score_threshold=0.0)
    count = result["boxes"].shape[0]
    assert count > 0 and result["boxes"].shape == (count, 4) and result["scores"].shape == (count,)
    assert result["labels"].dtype == torch.int64 and set(result["labels"].tolist()) <= {1, 2}
    if model.config.masks:
        assert result["masks"].shape == (count, 64, 80) and result["masks"].dtype == torch.bool
    if model.config.keypoints:
        assert result["keypoints"].shape == (count, 4, 3) and result["keypoint_scores"].shape == (count, 4)
        boxes = result["boxes"]
        inside_x = (result["keypoints"][..., 0] >= boxes[:, None, 0]) & (
            result["keypoints"][..., 0] <= boxes[:, None, 2]
        )
        assert inside_x.all()  # decoded within its box, in the image's pixels

    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    loaded = load_model(path, device="cpu")
    assert loaded.config == model.config
    (again,) = loaded.predict(images[0], score_threshold=0.0)
    assert torch.equal(again["labels"], result["labels"])
    for name in ("masks", "keypoints"):
        assert name not in result or torch.allclose(again[name].float(), result[name].float(), atol=1e-4)
    assert torch.allclose(again["boxes"], result["boxes"], atol=1e-4)

    session = onnx_session(
        export_onnx(model.eval(), tmp_path / "model.onnx", example_size=(48, 64), score_threshold=0.0)
    )
    check = compare_with_eager(model, session, images[1], score_threshold=0.0)  # not the traced size
    assert check.detections > 0 and check.same_count and check.same_labels
    assert check.max_box_difference <= 1e-3 and check.max_score_difference <= 1e-4
    assert check.mask_agreement >= 0.999 and check.max_keypoint_difference <= 1e-2


def test_c4_runs_res5_once_per_roi_as_the_box_head_and_shares_it_with_the_mask_head():
    model = build_model(variant_config(C4))
    heads = model.roi_heads
    assert (
        set(model.backbone.output_shape()) == {"res4"} and model.backbone.output_shape()["res4"].stride == 16
    )
    assert not hasattr(model.backbone.trunk, "res5")
    assert isinstance(heads.box_head, Res5BoxHead) and heads.box_head.res5 is not None
    assert heads.mask_head._roi_transform == (heads.box_head.res5,)
    assert not any(key.startswith("roi_heads.mask_head.") and "res5" in key for key in model.state_dict())
    assert model.rpn.anchor_generator.num_anchors_per_location == 15  # 5 sizes x 3 ratios on one map
    # res5 halves the 14x14 RoI; the deconvolution doubles it again: 14x14 masks
    rois_pooled = torch.rand(3, 128, 14, 14).contiguous(memory_format=torch.channels_last)
    from maskrcnn.structures import RoIs

    rois = RoIs(torch.rand(3, 4), torch.zeros(3, dtype=torch.int64), torch.tensor([1, 2, 1]))
    assert heads.mask_head(rois_pooled, rois).shape == (3, 14, 14)
    assert heads.box_head.box_features(rois_pooled).shape == (3, 256)


def test_c5_pools_from_res5_at_stride_32_without_a_second_res5():
    model = build_model(variant_config(C5))
    assert dict(model.backbone.output_shape()) == {"res5": model.backbone.trunk.output_shape()["res5"]}
    assert model.backbone.output_shape()["res5"].stride == 32
    assert model.roi_heads.box_head.res5 is None and model.roi_heads.mask_head._roi_transform == ()
    assert model.roi_heads.box_head.pooler.strides == (32,)


def test_the_softmax_and_agnostic_losses_predict_what_they_train():
    from maskrcnn.modeling.mask_head import softmax_mask_loss
    from maskrcnn.structures import RoIs

    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    targets = torch.zeros(2, 4, 4)
    targets[:, :2] = 1.0
    labels = torch.tensor([2, 1])
    loss = softmax_mask_loss(logits, targets, labels)
    pixel_class = torch.where(targets >= 0.5, labels[:, None, None], 0)
    expected = -torch.log_softmax(logits, dim=1).gather(1, pixel_class[:, None]).mean()
    assert torch.allclose(loss, expected)
    head = build_model(variant_config({"roi_heads": {"mask_loss": "softmax"}})).roi_heads.mask_head
    rois = RoIs(torch.rand(2, 4), torch.zeros(2, dtype=torch.int64), labels)
    probs = head.predict(logits.detach(), rois)["mask_probs"]
    assert torch.allclose(probs, logits.detach().softmax(1)[torch.arange(2), labels])
    agnostic = build_model(variant_config({"roi_heads": {"mask_loss": "agnostic"}})).roi_heads.mask_head
    assert agnostic.predictor.out_channels == 1


@pytest.mark.parametrize(
    "name, trunk, box_head, mask_head",
    [
        ("mask_rcnn_R_50_FPN_1x", torchvision.models.resnet50, "FCBoxHead", FCNMaskHead),
        ("mask_rcnn_R_101_FPN_1x", torchvision.models.resnet101, "FCBoxHead", FCNMaskHead),
        ("mask_rcnn_X_101_32x8d_FPN_1x", torchvision.models.resnext101_32x8d, "FCBoxHead", FCNMaskHead),
        ("mask_rcnn_X_101_64x4d_FPN_1x", torchvision.models.resnext101_64x4d, "FCBoxHead", FCNMaskHead),
        ("mask_rcnn_R_50_C4_1x", torchvision.models.resnet50, "Res5BoxHead", FCNMaskHead),
        ("mask_rcnn_R_101_C4_1x", torchvision.models.resnet101, "Res5BoxHead", FCNMaskHead),
        ("mask_rcnn_R_50_C5_1x", torchvision.models.resnet50, "Res5BoxHead", FCNMaskHead),
    ],
)
def test_the_packaged_paper_configs_build_the_papers_models(name, trunk, box_head, mask_head):
    config = load_config(str(CONFIGS / f"{name}.yaml"))
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = build_model(config.model)
        reference = trunk()
    ours = {k: v.shape.numel() for k, v in model.state_dict().items() if "trunk" in k or ".res5." in k}
    theirs = {k: v.shape.numel() for k, v in reference.state_dict().items()}
    theirs = {k: n for k, n in theirs.items() if not k.startswith("fc.") and "num_batches_tracked" not in k}
    assert sum(ours.values()) == sum(theirs.values()) and len(ours) == len(theirs)
    assert type(model.roi_heads.box_head).__name__ == box_head
    assert isinstance(model.roi_heads.mask_head, mask_head)
    kind = config.model.backbone.kind
    strides = {name: shape.stride for name, shape in model.backbone.output_shape().items()}
    assert (
        strides
        == {"fpn": {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}, "c4": {"res4": 16}, "c5": {"res5": 32}}[
            kind
        ]
    )
    if kind != "fpn":  # the paper's C4 settings
        assert config.model.rpn.post_nms_topk_test == 300
        assert config.model.roi_heads.batch_size_per_image == 64
