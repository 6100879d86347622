"""detectron2's model-zoo files: read safely, named and shaped as detectron2 writes them, converted
to this project's conventions, and the same detections after a round trip through its layout."""

import math
import os
import pickle
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from maskrcnn import build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.config import (
    BackboneConfig,
    ConfigError,
    ModelConfig,
    RoIHeadsConfig,
    config_from_dict,
    config_to_dict,
    merge,
)
from maskrcnn.config.validate import check_input_config
from maskrcnn.data.images import to_image_tensor
from maskrcnn.data.transforms import resized_size
from maskrcnn.interop.detectron2 import (
    anchor_order,
    detectron2_config,
    from_detectron2_layout,
    to_detectron2,
)
from maskrcnn.interop.init_weights import load_initial_weights
from maskrcnn.interop.load import load_model, read_weights_file
from maskrcnn.interop.state_dicts import CheckpointError
from maskrcnn.modeling.anchors import cell_anchors
from maskrcnn.modeling.mask_head import FCNMaskHead
from maskrcnn.modeling.paste import paste_masks
from maskrcnn.modeling.preprocess import Preprocessor
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.testing import tiny_model_config

D2_MEAN = (103.53, 116.28, 123.675)  # detectron2's PIXEL_MEAN, B, G, R on the 0-255 scale
CLASS_NAMES = ("__background__", "a", "b", "c")


def detectron2_like(changes: dict | None = None) -> ModelConfig:
    """A tiny model with detectron2's conventions and RPN settings (Base-RCNN-FPN)."""
    base = config_to_dict(tiny_model_config(class_names=CLASS_NAMES))
    conventions = {
        "backbone": {"norm": "frozen_bn", "freeze_at": 2, "stride_in_1x1": True},
        "anchors": {"round_to_integer": False},
        # empty proposals and boxes dropped as detectron2 drops them (after NMS and the cap)
        "rpn": {"pre_nms_topk_train": 2000, "post_nms_topk_train": 1000, "min_box_size": 0.0},
        "roi_heads": {
            "aligned": True,
            "sampling_ratio": 0,
            "mask_paste": "detectron2",
            "empty_boxes": "detectron2",
        },
        "input": {
            "channel_order": "bgr",
            "resize_rounding": "round",
            "pixel_mean": [v / 255 for v in D2_MEAN],
            "pixel_std": [1 / 255] * 3,
        },
    }
    return config_from_dict(ModelConfig, merge(merge(base, conventions), changes or {}))


C4 = {
    "backbone": {"kind": "c4"},
    "rpn": {"pre_nms_topk_train": 12000, "pre_nms_topk_test": 6000, "post_nms_topk_train": 2000},
    "roi_heads": {"box_resolution": 14, "mask_resolution": 14},
    "input": {"size_divisibility": 1},
}
KEYPOINTS = {
    "masks": False,
    "keypoints": True,
    "keypoint_head": {"num_keypoints": 5, "conv_dim": 16, "num_convs": 2, "score": "probability"},
    "rpn": {"post_nms_topk_train": 1500},
}


def seeded_model(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():  # scores and masks that vary, so that a wrong row or channel shows
        model.roi_heads.box_head.cls_score.weight.normal_(0, 0.5)
        model.roi_heads.box_head.bbox_pred.weight.normal_(0, 0.05)
        model.rpn.head.objectness.weight.normal_(0, 0.2)
        if config.masks:
            model.roi_heads.mask_head.predictor.weight.normal_(0, 0.3)
    return model


def write_pkl(path, weights: dict) -> None:
    """As the model zoo's files: a pickled dict, "model" maps names to numpy arrays."""
    with open(path, "wb") as file:
        model = {k: v.detach().cpu().numpy() for k, v in weights.items()}
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, file)


def write_pth(path, weights: dict) -> None:
    """As detectron2's trainer's checkpoints: tensors under "model", the trainer's state beside."""
    state = {"model": {k: v.detach().clone() for k, v in weights.items()}}
    torch.save(
        {**state, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "iteration": 9}, path
    )


def images() -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [
        generator.integers(0, 256, (70, 90, 3), dtype=np.uint8),
        generator.integers(0, 256, (64, 60, 3), dtype=np.uint8),
    ]


def assert_same_detections(expected: list[dict], actual: list[dict]) -> None:
    assert sum(len(e["boxes"]) for e in expected) > 10
    for e, a in zip(expected, actual):
        assert torch.equal(e["labels"], a["labels"])
        assert torch.allclose(e["boxes"], a["boxes"], atol=1e-4)
        assert torch.allclose(e["scores"], a["scores"], atol=1e-5)
        if "masks" in e:
            assert torch.equal(e["masks"], a["masks"])
        if "keypoints" in e:
            assert torch.allclose(e["keypoints"], a["keypoints"], atol=1e-3)


# (detectron2 key, its shape in the R50-FPN COCO Mask R-CNN file, this project's key)
R50_FPN = [
    ("backbone.bottom_up.stem.conv1.weight", (64, 3, 7, 7), "backbone.trunk.stem.conv.weight"),
    ("backbone.bottom_up.stem.conv1.norm.running_var", (64,), "backbone.trunk.stem.norm.running_var"),
    ("backbone.bottom_up.res2.0.conv1.weight", (64, 64, 1, 1), "backbone.trunk.res2.0.conv1.weight"),
    ("backbone.bottom_up.res2.0.conv1.norm.bias", (64,), "backbone.trunk.res2.0.norm1.bias"),
    ("backbone.bottom_up.res2.0.conv2.weight", (64, 64, 3, 3), "backbone.trunk.res2.0.conv2.weight"),
    ("backbone.bottom_up.res2.0.conv3.weight", (256, 64, 1, 1), "backbone.trunk.res2.0.conv3.weight"),
    (
        "backbone.bottom_up.res2.0.shortcut.weight",
        (256, 64, 1, 1),
        "backbone.trunk.res2.0.shortcut.conv.weight",
    ),
    (
        "backbone.bottom_up.res2.0.shortcut.norm.running_mean",
        (256,),
        "backbone.trunk.res2.0.shortcut.norm.running_mean",
    ),
    ("backbone.bottom_up.res3.0.conv1.weight", (128, 256, 1, 1), "backbone.trunk.res3.0.conv1.weight"),
    ("backbone.bottom_up.res4.5.conv3.weight", (1024, 256, 1, 1), "backbone.trunk.res4.5.conv3.weight"),
    ("backbone.bottom_up.res5.2.conv2.weight", (512, 512, 3, 3), "backbone.trunk.res5.2.conv2.weight"),
    ("backbone.fpn_lateral2.weight", (256, 256, 1, 1), "backbone.lateral.0.weight"),
    ("backbone.fpn_lateral5.weight", (256, 2048, 1, 1), "backbone.lateral.3.weight"),
    ("backbone.fpn_output2.weight", (256, 256, 3, 3), "backbone.output.0.weight"),
    ("backbone.fpn_output5.bias", (256,), "backbone.output.3.bias"),
    ("proposal_generator.rpn_head.conv.weight", (256, 256, 3, 3), "rpn.head.conv.weight"),
    ("proposal_generator.rpn_head.objectness_logits.weight", (3, 256, 1, 1), "rpn.head.objectness.weight"),
    ("proposal_generator.rpn_head.anchor_deltas.weight", (12, 256, 1, 1), "rpn.head.deltas.weight"),
    ("roi_heads.box_head.fc1.weight", (1024, 12544), "roi_heads.box_head.fc6.weight"),
    ("roi_heads.box_head.fc2.weight", (1024, 1024), "roi_heads.box_head.fc7.weight"),
    ("roi_heads.box_predictor.cls_score.weight", (81, 1024), "roi_heads.box_head.cls_score.weight"),
    ("roi_heads.box_predictor.bbox_pred.weight", (320, 1024), "roi_heads.box_head.bbox_pred.weight"),
    ("roi_heads.mask_head.mask_fcn1.weight", (256, 256, 3, 3), "roi_heads.mask_head.convs.0.weight"),
    ("roi_heads.mask_head.mask_fcn4.bias", (256,), "roi_heads.mask_head.convs.3.bias"),
    ("roi_heads.mask_head.deconv.weight", (256, 256, 2, 2), "roi_heads.mask_head.deconv.weight"),
    ("roi_heads.mask_head.predictor.weight", (80, 256, 1, 1), "roi_heads.mask_head.predictor.weight"),
]
R50_C4 = [
    ("backbone.stem.conv1.weight", (64, 3, 7, 7), "backbone.trunk.stem.conv.weight"),
    ("backbone.res4.5.conv3.weight", (1024, 256, 1, 1), "backbone.trunk.res4.5.conv3.weight"),
    ("roi_heads.res5.0.conv1.weight", (512, 1024, 1, 1), "roi_heads.box_head.res5.0.conv1.weight"),
    (
        "roi_heads.res5.0.shortcut.weight",
        (2048, 1024, 1, 1),
        "roi_heads.box_head.res5.0.shortcut.conv.weight",
    ),
    ("roi_heads.res5.2.conv3.norm.weight", (2048,), "roi_heads.box_head.res5.2.norm3.weight"),
    ("proposal_generator.rpn_head.conv.weight", (1024, 1024, 3, 3), "rpn.head.conv.weight"),
    ("proposal_generator.rpn_head.objectness_logits.weight", (15, 1024, 1, 1), "rpn.head.objectness.weight"),
    ("proposal_generator.rpn_head.anchor_deltas.weight", (60, 1024, 1, 1), "rpn.head.deltas.weight"),
    ("roi_heads.box_predictor.cls_score.weight", (81, 2048), "roi_heads.box_head.cls_score.weight"),
    ("roi_heads.box_predictor.bbox_pred.weight", (320, 2048), "roi_heads.box_head.bbox_pred.weight"),
    ("roi_heads.mask_head.deconv.weight", (2048, 256, 2, 2), "roi_heads.mask_head.deconv.weight"),
    ("roi_heads.mask_head.predictor.weight", (80, 256, 1, 1), "roi_heads.mask_head.predictor.weight"),
]
X101_FPN = [
    ("backbone.bottom_up.res2.0.conv1.weight", (256, 64, 1, 1), "backbone.trunk.res2.0.conv1.weight"),
    ("backbone.bottom_up.res2.0.conv2.weight", (256, 8, 3, 3), "backbone.trunk.res2.0.conv2.weight"),
    ("backbone.bottom_up.res4.22.conv3.weight", (1024, 1024, 1, 1), "backbone.trunk.res4.22.conv3.weight"),
    ("backbone.bottom_up.res5.0.conv2.weight", (2048, 64, 3, 3), "backbone.trunk.res5.0.conv2.weight"),
]
KEYPOINT_R50_FPN = [
    ("roi_heads.keypoint_head.conv_fcn1.weight", (512, 256, 3, 3), "roi_heads.keypoint_head.convs.0.weight"),
    ("roi_heads.keypoint_head.conv_fcn8.weight", (512, 512, 3, 3), "roi_heads.keypoint_head.convs.7.weight"),
    (
        "roi_heads.keypoint_head.score_lowres.weight",
        (512, 17, 4, 4),
        "roi_heads.keypoint_head.predictor.weight",
    ),
    ("roi_heads.keypoint_head.score_lowres.bias", (17,), "roi_heads.keypoint_head.predictor.bias"),
    ("roi_heads.box_predictor.cls_score.weight", (2, 1024), "roi_heads.box_head.cls_score.weight"),
    ("roi_heads.box_predictor.bbox_pred.weight", (4, 1024), "roi_heads.box_head.bbox_pred.weight"),
]
ZOO = {
    # name: (our config of that model, its table, the number of entries of detectron2's file)
    "R50-FPN": (ModelConfig(num_classes=81), R50_FPN, 307),
    "R50-C4": (
        ModelConfig(
            num_classes=81, backbone=BackboneConfig(kind="c4"), roi_heads=RoIHeadsConfig(box_resolution=14)
        ),
        R50_C4,
        279,
    ),
    "X101-FPN": (
        ModelConfig(num_classes=81, backbone=BackboneConfig(depth=101, groups=32, width_per_group=8)),
        X101_FPN,
        562,
    ),
    "Keypoint-R50-FPN": (ModelConfig(num_classes=2, masks=False, keypoints=True), KEYPOINT_R50_FPN, 313),
}


@pytest.mark.parametrize("name", ZOO)
def test_the_model_zoo_layout_is_detectron2s(name):
    config, table, count = ZOO[name]
    with torch.device("meta"):  # shapes only: no memory for the weights
        written = to_detectron2(build_model(config).state_dict(), config)
    for key, shape, _ in table:
        assert tuple(written[key].shape) == shape, key
    assert len(written) == count
    assert not any("num_batches_tracked" in key for key in written)
    assert "backbone.bottom_up.res2.1.shortcut.weight" not in written  # only the first block projects
    # and read back: each of detectron2's names lands on ours
    converted, file_name = from_detectron2_layout(written)
    for key, _, ours in table:
        assert ours in converted and file_name(ours) == key


@pytest.mark.parametrize("name", ZOO)
def test_the_model_zoo_architecture_is_read_from_the_names_and_shapes(name):
    config, _, _ = ZOO[name]
    with torch.device("meta"):
        written = to_detectron2(build_model(config).state_dict(), config)
    read = detectron2_config(written)
    for key in ("depth", "groups", "width_per_group", "stage_blocks", "kind", "stage_channels"):
        assert getattr(read.backbone, key) == getattr(config.backbone, key), key
    assert (read.num_classes, read.masks, read.keypoints) == (
        config.num_classes,
        config.masks,
        config.keypoints,
    )
    assert read.roi_heads.box_resolution == config.roi_heads.box_resolution
    # The MSRA ResNets stride in the 1x1 conv and take std 1; the FAIR ResNeXt neither.
    resnext = config.backbone.groups > 1
    assert read.backbone.stride_in_1x1 is not resnext
    std = (57.375, 57.12, 58.395) if resnext else (1.0, 1.0, 1.0)
    assert read.input.pixel_std == pytest.approx([v / 255 for v in std])
    assert read.input.pixel_mean == pytest.approx([v / 255 for v in D2_MEAN])
    assert (read.input.channel_order, read.input.resize_rounding) == ("bgr", "round")
    assert (read.roi_heads.aligned, read.roi_heads.sampling_ratio, read.roi_heads.mask_paste) == (
        True,
        0,
        "detectron2",
    )
    assert read.anchors.round_to_integer is False and read.backbone.norm_eps == 1e-5
    assert read.rpn.post_nms_topk_test == 1000
    c4 = config.backbone.kind == "c4"
    assert read.rpn.pre_nms_topk_test == (6000 if c4 else 1000)
    assert read.input.size_divisibility == (1 if c4 else 32)  # detectron2 pads only FPN's input
    if config.num_classes == 81:  # COCO's 80 classes in detectron2's order, with their category ids
        assert read.class_names[:4] == ("__background__", "person", "bicycle", "car")
        assert read.class_names[-1] == "toothbrush" and len(read.class_names) == 81
        assert (
            read.category_ids[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13) and read.category_ids[-1] == 90
        )
    if config.keypoints:
        assert read.keypoint_head.num_keypoints == 17 and read.keypoint_head.names[0] == "nose"
        assert read.class_names == ("__background__", "person")


def test_pixel_statistics_a_file_stores_are_used():
    config = ModelConfig(num_classes=81)
    with torch.device("meta"):
        written = to_detectron2(build_model(config).state_dict(), config)
    written["pixel_std"] = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
    assert detectron2_config(written).input.pixel_std == pytest.approx(
        [57.375 / 255, 57.12 / 255, 58.395 / 255]
    )


def test_the_background_moves_from_last_to_first():
    # detectron2's rows: cls_score k (k = 0..79 the classes, 80 the background), bbox_pred 4k..4k+3
    # of class k, the mask predictor's channel k of class k
    written = {
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(4, 3, 7, 7),
        "roi_heads.box_predictor.cls_score.weight": torch.arange(81.0)[:, None].repeat(1, 2),
        "roi_heads.box_predictor.cls_score.bias": torch.arange(81.0),
        "roi_heads.box_predictor.bbox_pred.bias": torch.arange(320.0) + 1,
        "roi_heads.mask_head.predictor.bias": torch.arange(80.0) + 1,
    }
    converted, _ = from_detectron2_layout(written)
    scores = converted["roi_heads.box_head.cls_score.bias"]
    assert scores[0] == 80 and scores[1] == 0 and scores[80] == 79
    assert torch.equal(converted["roi_heads.box_head.cls_score.weight"][:, 0], scores)
    deltas = converted["roi_heads.box_head.bbox_pred.bias"]
    assert deltas.shape == (324,) and torch.equal(deltas[:4], torch.zeros(4))
    assert torch.equal(deltas[4:8], torch.tensor([1.0, 2, 3, 4]))  # class 1: detectron2's class 0
    masks = converted["roi_heads.mask_head.predictor.bias"]
    assert masks.shape == (81,) and masks[0] == 0 and masks[1] == 1 and masks[80] == 80


def detectron2_cell_anchors(sizes, ratios) -> torch.Tensor:
    """detectron2's cell anchors, in its order: for each size, for each aspect ratio (h / w)."""
    boxes = []
    for size in sizes:
        for ratio in ratios:
            width = math.sqrt(size * size / ratio)
            height = ratio * width
            boxes.append([-width / 2, -height / 2, width / 2, height / 2])
    return torch.tensor(boxes)


def test_c4_rpn_channels_follow_the_anchor_order():
    sizes, ratios = (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)
    # channel j of detectron2's head scores its anchor j; deltas 4j..4j+3 are that anchor's
    written = {
        "backbone.stem.conv1.weight": torch.zeros(4, 3, 7, 7),
        "roi_heads.res5.0.conv1.weight": torch.zeros(4, 4, 1, 1),
        "proposal_generator.rpn_head.objectness_logits.bias": torch.arange(15.0),
        "proposal_generator.rpn_head.anchor_deltas.bias": torch.arange(60.0),
    }
    converted, _ = from_detectron2_layout(written)
    theirs = converted["rpn.head.objectness.bias"].long()
    ours = cell_anchors(sizes, ratios, round_to_integer=False)
    # each of our anchors is scored by the channel detectron2 used for the same box
    assert torch.allclose(ours, detectron2_cell_anchors(sizes, ratios)[theirs], atol=1e-4)
    assert theirs.tolist()[:6] == [0, 3, 6, 9, 12, 1]  # ratio 0.5 at the five sizes, then ratio 1 ...
    deltas = converted["rpn.head.deltas.bias"].long().reshape(15, 4)
    assert torch.equal(deltas, theirs[:, None] * 4 + torch.arange(4))
    assert anchor_order(1, 3) == [0, 1, 2]  # FPN: one size per level, the orders agree


def test_the_bgr_model_normalizes_as_detectron2_does():
    config = detectron2_like().input
    image = images()[0]
    normalized = Preprocessor(config)([to_image_tensor(image, config)], resize=False).tensor[0]
    # detectron2: the uint8 image in BGR order, minus PIXEL_MEAN, divided by PIXEL_STD (1)
    bgr = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float()
    expected = bgr - torch.tensor(D2_MEAN)[:, None, None]
    assert torch.allclose(normalized[:, :70, :90], expected, atol=1e-3)


def test_a_bgr_model_equals_an_rgb_model_with_its_stem_reversed():
    config = detectron2_like()
    bgr = seeded_model(config)
    rgb_config = replace(
        config,
        input=replace(
            config.input,
            channel_order="rgb",
            pixel_mean=config.input.pixel_mean[::-1],
            pixel_std=config.input.pixel_std[::-1],
        ),
    )
    rgb = build_model(rgb_config).eval()
    state = bgr.state_dict()
    state["backbone.trunk.stem.conv.weight"] = state["backbone.trunk.stem.conv.weight"].flip(1)
    rgb.load_state_dict(state)
    assert_same_detections(
        bgr.predict(images(), score_threshold=0.0), rgb.predict(images(), score_threshold=0.0)
    )


def test_the_traced_model_reverses_the_channels_too():
    config = detectron2_like().input
    preprocessor = Preprocessor(config)
    first, other = torch.rand(3, 40, 50), torch.rand(3, 36, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace, which the ONNX export also uses
        traced = torch.jit.trace(lambda image: preprocessor([image]).tensor, (first,))
    assert torch.equal(traced(other), preprocessor([other]).tensor)
    rgb = Preprocessor(replace(config, channel_order="rgb"))([other]).tensor
    assert not torch.allclose(traced(other), rgb)


def detectron2_resized(height: int, width: int, short: int, longest: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output size, step by step as it computes it."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > longest:
        scale = longest / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def test_round_resizing_is_detectron2s():
    sizes = [(480, 640), (427, 640), (640, 383), (333, 1000), (612, 612), (500, 375), (1, 1999)]
    differs = 0
    for height, width in sizes:
        expected = detectron2_resized(height, width, 800, 1333)
        assert tuple(resized_size((height, width), 800, 1333, "round").tolist()) == expected
        differs += tuple(resized_size((height, width), 800, 1333).tolist()) != expected
    assert differs >= 3  # floor, the default, is another rule
    preprocessor = Preprocessor(replace(detectron2_like().input, min_size=800, max_size=1333))
    assert preprocessor([torch.rand(3, 480, 640)]).image_sizes.tolist() == [[800, 1067]]


def test_bgr_needs_three_channels():
    config = replace(detectron2_like().input, channels=1, pixel_mean=(0.5,), pixel_std=(0.2,))
    with pytest.raises(ConfigError, match="model.input.channel_order=.*contradicts model.input.channels=1"):
        check_input_config(config)


ROUND_TRIPS = {"fpn": {}, "c4": C4, "keypoints": KEYPOINTS}


@pytest.mark.parametrize("kind", ROUND_TRIPS)
def test_a_model_written_in_detectron2s_layout_loads_to_the_same_detections(kind, tmp_path):
    config = detectron2_like(ROUND_TRIPS[kind])
    model = seeded_model(config)
    written = to_detectron2(model.state_dict(), config)
    expected = model.predict(images(), score_threshold=0.0)
    assert ("masks" in expected[0], "keypoints" in expected[0]) == (config.masks, config.keypoints)
    for writer, name in ((write_pkl, "model_final.pkl"), (write_pth, "model_final.pth")):
        writer(tmp_path / name, written)
        loaded = load_model(tmp_path / name, device="cpu", config=config)
        assert_same_detections(expected, loaded.predict(images(), score_threshold=0.0))


def test_the_model_of_a_file_is_read_from_it_with_detectron2s_settings(tmp_path):
    config = detectron2_like()
    write_pkl(tmp_path / "model.pkl", to_detectron2(seeded_model(config).state_dict(), config))
    loaded = load_model(tmp_path / "model.pkl", device="cpu")
    # What the weights do not say is detectron2's: its test sizes and detection settings.
    inference = {"score_threshold": 0.05, "detections_per_image": 100}
    expected = replace(
        config,
        class_names=(),  # 3 classes: not COCO's, so nameless
        input=replace(config.input, min_size=800, max_size=1333),
        roi_heads=replace(config.roi_heads, **inference),
    )
    assert config_to_dict(loaded.config) == config_to_dict(expected)


def test_a_given_config_overrides_what_the_file_cannot_tell(tmp_path):
    config = detectron2_like()
    write_pkl(tmp_path / "model.pkl", to_detectron2(seeded_model(config).state_dict(), config))
    inferred = detectron2_config(pickle.loads((tmp_path / "model.pkl").read_bytes())["model"])
    assert inferred.backbone.stride_in_1x1 is True  # groups 1: an MSRA ResNet's stride
    given = replace(inferred, backbone=replace(inferred.backbone, stride_in_1x1=False))
    loaded = load_model(tmp_path / "model.pkl", device="cpu", config=given)
    block = loaded.backbone.trunk.res3[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_missing_and_misshapen_keys_are_all_listed_with_the_files_names(tmp_path):
    config = detectron2_like()
    written = to_detectron2(seeded_model(config).state_dict(), config)
    del written["backbone.fpn_output3.bias"], written["roi_heads.mask_head.mask_fcn2.weight"]
    written["roi_heads.box_head.fc2.weight"] = torch.zeros(64, 7)
    written["proposal_generator.rpn_head.anchor_deltas.bias"] = torch.zeros(8)
    written["roi_heads.box_head.fc3.weight"] = torch.zeros(2)
    write_pkl(tmp_path / "broken.pkl", written)
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "broken.pkl", config=config)
    message = str(error.value)
    assert (
        message.startswith(f"{tmp_path / 'broken.pkl'}: weights do not fit the model: ")
        and "\n" not in message
    )
    assert "missing keys (2): backbone.fpn_output3.bias, roi_heads.mask_head.mask_fcn2.weight" in message
    assert "unexpected keys (1): roi_heads.box_head.fc3.weight" in message
    assert "shape mismatches (2): " in message
    assert "proposal_generator.rpn_head.anchor_deltas.bias: file has (8,), model expects (12,)" in message
    assert "roi_heads.box_head.fc2.weight: file has (64, 7), model expects (64, 64)" in message


class RunsACommand:
    """A pickle payload whose unpickling would run `function(argument)`."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
def test_a_pickle_that_would_run_code_is_refused_unrun(how, tmp_path):
    marker = tmp_path / "ran"
    if how == "os.system":
        payload = RunsACommand(os.system, f"touch {marker}")
    else:
        payload = RunsACommand(exec, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as file:
        pickle.dump({"model": {"backbone.bottom_up.stem.conv1.weight": payload}, "__author__": "x"}, file)
    asked = f"{payload.function.__module__}.{payload.function.__name__}"  # posix.system, builtins.exec
    with pytest.raises(
        CheckpointError, match=f"^{path}: refused: the pickle asks for the Python object {asked},"
    ):
        load_model(path)
    with pytest.raises(CheckpointError, match=f"^{path}: refused"):
        load_initial_weights(build_model(tiny_model_config()), str(path))
    assert not marker.exists()


def test_a_pickle_of_another_layout_gets_the_usual_error(tmp_path):
    path = tmp_path / "other.pkl"
    with open(path, "wb") as file:
        pickle.dump({"model": {"conv.weight": np.zeros((2, 2), np.float32)}}, file, protocol=2)
    with pytest.raises(
        CheckpointError, match="not a maskrcnn checkpoint nor a torchvision Mask R-CNN state dict"
    ):
        load_model(path)
    (tmp_path / "cut.pkl").write_bytes(path.read_bytes()[:30])
    with pytest.raises(CheckpointError, match="cut.pkl: truncated or corrupt pickle"):
        load_model(tmp_path / "cut.pkl")


def test_a_config_is_only_for_detectron2_files(tmp_path):

    save_checkpoint(tmp_path / "ours.pt", build_model(tiny_model_config()))
    with pytest.raises(CheckpointError, match="a model config is given for detectron2 files only"):
        load_model(tmp_path / "ours.pt", config=tiny_model_config())


def test_fine_tuning_from_detectron2_keeps_other_predictors_fresh(tmp_path):
    source_config = detectron2_like()
    source = seeded_model(source_config)
    write_pth(tmp_path / "model_final.pth", to_detectron2(source.state_dict(), source_config))
    target = build_model(replace(detectron2_like(), num_classes=6, class_names=()))
    fresh = target.roi_heads.box_head.cls_score.weight.clone()
    with pytest.warns(UserWarning) as caught:
        untouched = load_initial_weights(target, str(tmp_path / "model_final.pth"))
    message = " ".join(str(w.message) for w in caught)
    for name in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.bias"):
        assert name in message  # as the file names them
    assert "roi_heads.mask_head.predictor.weight" in message and "trained with" not in message
    assert torch.equal(target.roi_heads.box_head.cls_score.weight, fresh)
    assert "roi_heads.box_head.cls_score.weight" in untouched
    assert torch.equal(target.roi_heads.box_head.fc6.weight, source.roi_heads.box_head.fc6.weight)
    assert torch.equal(target.backbone.trunk.res3[0].conv2.weight, source.backbone.trunk.res3[0].conv2.weight)
    assert torch.equal(target.rpn.head.deltas.bias, source.rpn.head.deltas.bias)


def test_fine_tuning_an_rgb_model_from_detectron2_warns_of_its_conventions(tmp_path):
    source_config = detectron2_like()
    write_pkl(tmp_path / "model.pkl", to_detectron2(seeded_model(source_config).state_dict(), source_config))
    target = build_model(tiny_model_config(class_names=CLASS_NAMES))  # RGB, ImageNet statistics
    with pytest.warns(UserWarning, match="model.backbone.stride_in_1x1=true, model.input.channel_order=bgr"):
        load_initial_weights(target, str(tmp_path / "model.pkl"))


def test_a_detectron2_trunk_alone_initialises_the_trunk_only(tmp_path):
    # detectron2's ImageNet files converted from torchvision: stem.conv1, res2..res5, the classifier
    config = detectron2_like()
    source = seeded_model(config)
    written = to_detectron2(source.state_dict(), config)
    trunk = {k.removeprefix("backbone.bottom_up."): v for k, v in written.items() if "bottom_up" in k}
    trunk["stem.fc.weight"] = torch.zeros(10, 256)
    with open(tmp_path / "R-50.pkl", "wb") as file:
        model = {k: v.numpy() for k, v in trunk.items()}
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, file)
    target = build_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither layers left fresh nor conventions to warn of
        untouched = load_initial_weights(target, str(tmp_path / "R-50.pkl"))
    assert torch.equal(
        target.backbone.trunk.res5[0].shortcut.conv.weight, source.backbone.trunk.res5[0].shortcut.conv.weight
    )
    assert not any(key.startswith("backbone.trunk.") for key in untouched)
    assert "backbone.lateral.0.weight" in untouched and "rpn.head.conv.weight" in untouched
    with pytest.raises(CheckpointError, match="a detectron2 trunk alone"):
        load_model(tmp_path / "R-50.pkl")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_every_protocol_are_read(protocol, tmp_path):

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.float64(2.5), "c": [1, (2, "x")]}
    with open(tmp_path / "file.pkl", "wb") as file:
        pickle.dump({"model": arrays, "__author__": "x"}, file, protocol=protocol)
    read = read_weights_file(tmp_path / "file.pkl")["model"]
    assert np.array_equal(read["a"], arrays["a"]) and read["b"] == 2.5 and read["c"] == [1, (2, "x")]


def test_the_mask_head_pastes_as_its_setting_says():

    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(6, 28, 28, generator=generator)
    corners = torch.rand(6, 2, generator=generator) * 30
    boxes = torch.cat((corners, corners + 5 + torch.rand(6, 2, generator=generator) * 30), dim=1)
    pasted = {}
    for paste in ("torchvision", "detectron2"):
        head = FCNMaskHead(MultiScaleRoIPooler(14, (4,), 0, True, "align"), ("p2",), 8, 3, 8, 1, paste=paste)
        pasted[paste] = head.to_image({"mask_probs": probabilities}, boxes, (60, 70), torch.ones(2))["masks"]
        assert torch.equal(pasted[paste], paste_masks(probabilities, boxes, (60, 70), 0.5, paste))
    assert not torch.equal(pasted["torchvision"], pasted["detectron2"])
    with pytest.raises(ValueError, match="mask paste must be one of torchvision, detectron2"):
        FCNMaskHead(MultiScaleRoIPooler(14, (4,), 0, True, "align"), ("p2",), 8, 3, paste="grid")
