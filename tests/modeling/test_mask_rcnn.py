"""The public predict API: input types, validation, output shapes."""

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn import ModelConfig, build_model
from maskrcnn.config import InputConfig, RoIHeadsConfig


def tiny_config(**roi_heads) -> ModelConfig:
    return ModelConfig(
        num_classes=4,
        class_names=("__background__", "circle", "square", "triangle"),
        input=InputConfig(min_size=64, max_size=96),
        roi_heads=RoIHeadsConfig(**{"score_threshold": 0.0, **roi_heads}),
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


def random_uint8_image(height=48, width=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_outputs_have_documented_types_and_shapes(model):
    array = random_uint8_image()
    (result,) = model.predict([array], score_threshold=0.0)
    count = len(result["boxes"])
    assert count > 0
    assert result["boxes"].shape == (count, 4) and result["boxes"].dtype == torch.float32
    assert result["scores"].shape == (count,)
    assert result["labels"].dtype == torch.int64
    assert result["masks"].shape == (count, 48, 64) and result["masks"].dtype == torch.bool
    assert ((result["labels"] >= 1) & (result["labels"] < 4)).all()
    # boxes are in the input image's pixels, not the resized ones
    assert result["boxes"][:, 2].max() <= 64 + 1e-3 and result["boxes"][:, 3].max() <= 48 + 1e-3
    assert (result["scores"][:-1] >= result["scores"][1:]).all(), "detections come best first"


def test_every_input_type_gives_the_same_detections(model):
    array = random_uint8_image(seed=1)
    inputs = [
        array,
        Image.fromarray(array),
        torch.from_numpy(array).permute(2, 0, 1).contiguous(),
        torch.from_numpy(array).permute(2, 0, 1).float() / 255,
    ]
    results = model.predict(inputs, score_threshold=0.0)
    for other in results[1:]:
        torch.testing.assert_close(other["boxes"], results[0]["boxes"])
        assert torch.equal(other["labels"], results[0]["labels"])
        assert torch.equal(other["masks"], results[0]["masks"])


def test_images_of_different_sizes_in_one_call(model):
    results = model.predict(
        [random_uint8_image(40, 70, 2), random_uint8_image(90, 30, 3)], score_threshold=0.0
    )
    assert results[0]["masks"].shape[-2:] == (40, 70)
    assert results[1]["masks"].shape[-2:] == (90, 30)


def test_single_image_and_grayscale_are_accepted(model):
    gray = random_uint8_image(seed=4)[:, :, 0]
    (from_array,) = model.predict(gray, score_threshold=0.0)
    (from_pil,) = model.predict(Image.fromarray(gray), score_threshold=0.0)
    torch.testing.assert_close(from_array["boxes"], from_pil["boxes"])


def test_no_detection_above_threshold_returns_empty_tensors():
    torch.manual_seed(0)
    model = build_model(tiny_config(score_threshold=1.0)).eval()
    (result,) = model.predict([random_uint8_image(30, 50)], score_threshold=0.0)
    assert result["boxes"].shape == (0, 4) and result["boxes"].dtype == torch.float32
    assert result["scores"].shape == (0,)
    assert result["labels"].shape == (0,) and result["labels"].dtype == torch.int64
    assert result["masks"].shape == (0, 30, 50) and result["masks"].dtype == torch.bool


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((20, 20, 4), dtype=np.uint8), "channels"),
        (torch.rand(2, 20, 20), "channels"),
        (np.zeros((0, 0, 3), dtype=np.uint8), "empty"),
        (torch.full((3, 10, 10), float("nan")), "NaN"),
        ("image.png", "unsupported image type"),
        (torch.zeros(3, 10, 10, dtype=torch.bool), "unsupported pixel type"),
        (np.zeros((2, 3, 4, 5), dtype=np.uint8), "(H, W, 3)"),
    ],
    # 0-255 floats are refused under intensity "range" (tests/data/test_images.py); this model's
    # "auto" scales them by their percentiles.
    ids=["rgba", "two-channels", "zero-size", "nan", "str", "bool", "4d-array"],
)
def test_bad_input_raises_value_error_naming_the_problem(model, image, message):
    with pytest.raises(ValueError, match=None) as error:
        model.predict([np.zeros((8, 8, 3), dtype=np.uint8), image], score_threshold=0.0)
    assert message in str(error.value)
    assert "images[1]" in str(error.value)


def test_predict_keeps_the_training_flag(model):
    model.train()
    model.predict([random_uint8_image()], score_threshold=0.0)
    assert model.training
    model.eval()


def test_score_threshold_keeps_the_detections_scoring_at_least_it(model):
    from maskrcnn.choices import PREDICT_SCORE_THRESHOLD

    image = random_uint8_image(seed=5)
    (everything,) = model.predict(image, score_threshold=0.0)
    scores = everything["scores"]
    threshold = float(scores.median())
    (kept,) = model.predict(image, score_threshold=threshold)
    assert 0 < len(kept["scores"]) < len(scores)
    torch.testing.assert_close(kept["scores"], scores[scores >= threshold])
    torch.testing.assert_close(kept["boxes"], everything["boxes"][scores >= threshold])
    assert torch.equal(kept["masks"], everything["masks"][scores >= threshold])
    (default,) = model.predict(image)
    assert torch.equal(default["scores"], scores[scores >= PREDICT_SCORE_THRESHOLD])


def test_one_default_threshold_for_the_api_and_the_commands():
    import inspect

    from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
    from maskrcnn.cli.main import build_parser
    from maskrcnn.export.onnx import export_onnx
    from maskrcnn.modeling.mask_rcnn import MaskRCNN

    assert (
        inspect.signature(MaskRCNN.predict).parameters["score_threshold"].default == PREDICT_SCORE_THRESHOLD
    )
    assert inspect.signature(export_onnx).parameters["score_threshold"].default == PREDICT_SCORE_THRESHOLD
    parser = build_parser()
    for command in (
        ["predict", "x.png", "--weights", "w", "--out", "o"],
        ["export", "o.onnx", "--weights", "w"],
    ):
        assert parser.parse_args(command).score_threshold == PREDICT_SCORE_THRESHOLD
