"""A new RoI head plugs in through the wiring function alone: here a toy per-RoI "area" regressor."""

import torch
import torch.nn.functional as F
from torch import nn

from maskrcnn.modeling.box_head import matched_targets
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.testing import tiny_model_config


class AreaHead(RoIHead):
    """Predicts log(area) of the object in each RoI from its pooled features."""

    def __init__(self, channels: int, strides: tuple[int, ...]):
        super().__init__(MultiScaleRoIPooler(4, strides), ("p2", "p3", "p4", "p5"))
        self.fc = nn.Linear(channels * 16, 1)
        nn.init.zeros_(self.fc.weight)
        self.calls = []

    def forward(self, pooled, rois):
        self.calls.append(("forward", pooled.shape[0]))
        return self.fc(pooled.flatten(1))[:, 0]

    def loss(self, raw, rois, targets):
        boxes = matched_targets([t["boxes"] for t in targets], rois)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return {"loss_area": F.smooth_l1_loss(raw, area.clamp(min=1).log())}

    def predict(self, raw, rois):
        return {"area": raw.exp()}

    def to_image(self, outputs, boxes, image_size, scale):
        return {"area": outputs["area"] * scale[0] * scale[1]}


def shapes_batch(generator):
    """Two 64x80 images, each with one bright rectangle and its box, label and mask."""
    images, targets = [], []
    for corner in ((8, 10), (20, 30)):
        image = torch.rand(3, 64, 80, generator=generator) * 0.2
        y, x = corner
        image[:, y : y + 24, x : x + 30] += 0.7
        mask = torch.zeros(1, 64, 80, dtype=torch.uint8)
        mask[0, y : y + 24, x : x + 30] = 1
        box = torch.tensor([[x, y, x + 30, y + 24]], dtype=torch.float32)
        images.append(image)
        targets.append({"boxes": box, "labels": torch.tensor([1]), "masks": mask})
    return images, targets


def test_a_toy_head_trains_and_predicts_through_build_model_alone():
    torch.manual_seed(0)
    config = tiny_model_config()
    channels = config.backbone.fpn_channels
    head = AreaHead(channels, (4, 8, 16, 32))
    model = build_model(config, extra_heads={"area": head})
    assert model.roi_heads.area_head is head
    assert "roi_heads.area_head.fc.weight" in model.state_dict()

    images, targets = shapes_batch(torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.002)
    model.train()
    first = None
    for _ in range(5):
        losses = model.losses(images, targets)
        assert {"loss_cls", "loss_box", "loss_mask", "loss_area"} <= set(losses)
        if first is None:
            first = losses["loss_area"].item()
        optimizer.zero_grad()
        sum(losses.values()).backward()
        assert head.fc.weight.grad is not None and head.fc.weight.grad.abs().sum() > 0
        optimizer.step()
    # it trained on foreground RoIs only, and learned something about the areas
    assert losses["loss_area"].item() < first

    head.calls.clear()
    (result,) = model.predict(images[0], score_threshold=0.0)
    count = len(result["boxes"])
    assert count > 0
    assert result["area"].shape == (count,)
    assert torch.isfinite(result["area"]).all() and (result["area"] > 0).all()
    assert result["masks"].shape == (count, 64, 80)  # the other heads still run
    # at inference it ran once, on the detections
    assert head.calls == [("forward", count)]
