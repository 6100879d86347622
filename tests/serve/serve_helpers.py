"""Helpers of the server's tests: tiny models with random weights (they detect something in
any image), a client of the app, images as encoded bytes, and the model's own answer for an
image, computed the way `maskrcnn predict` computes it."""

import contextlib
import dataclasses
import io
import warnings

import numpy as np
import torch
from PIL import Image

import maskrcnn
from maskrcnn.config import KeypointHeadConfig
from maskrcnn.data.images import load_image, to_image_tensor
from maskrcnn.evaluation.coco import label_to_category
from maskrcnn.evaluation.results import detections_to_coco
from maskrcnn.serve.app import create_app
from maskrcnn.serve.settings import ServeSettings
from maskrcnn.testing import tiny_model_config

with warnings.catch_warnings():  # starlette's note about httpx's successor, at import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CLASSES = ("__background__", "circle", "square")
CATEGORY_IDS = (7, 9)  # not the labels: the answers must map them


def tiny_model(keypoints: bool = False):
    torch.manual_seed(0)
    config = tiny_model_config(CLASSES, CATEGORY_IDS)
    if keypoints:
        head = KeypointHeadConfig(
            num_keypoints=4,
            names=("top", "right", "bottom", "left"),
            skeleton=((1, 2), (2, 3), (3, 4)),
            conv_dim=16,
            num_convs=2,
        )
        config = dataclasses.replace(config, keypoints=True, keypoint_head=head)
    return maskrcnn.build_model(config).eval()


@contextlib.contextmanager
def serving(model, **settings):
    """A TestClient of `create_app(model, ServeSettings(**settings))`, its lifespan running."""
    with TestClient(create_app(model, ServeSettings(**settings))) as client:
        yield client


def picture(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """An (H, W, 3) uint8 image of a few bright rectangles on noise; each seed draws others."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        h, w = rng.integers(6, height // 2), rng.integers(6, width // 2)
        pixels[y : y + h, x : x + w] = rng.integers(120, 255, size=3, dtype=np.uint8)
    return pixels


def encoded(pixels: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format)
    return buffer.getvalue()


def expected_answer(
    model, data: bytes, tmp_path, score_threshold=0.0, polygons=False, suffix=".png", **tiling
):
    """What /v1/predict must answer for `data`: the file read by `load_image`, `model.predict`
    on it alone and `detections_to_coco`, as the API's entries, best first; and the raw
    detections (the model's own masks)."""
    path = tmp_path / f"expected{suffix}"
    path.write_bytes(data)
    image = to_image_tensor(load_image(path, 0), model.config.input, "expected")
    (detections,) = model.predict([image], "fp32", normalized=True, score_threshold=score_threshold, **tiling)
    entries = detections_to_coco(0, detections, category_ids=label_to_category(model), polygons=polygons)
    answer = []
    for entry, label in zip(entries, detections["labels"].tolist()):
        item = {
            "box": entry["bbox"],
            "score": entry["score"],
            "label": label,
            "class_name": model.class_names[label],
            "category_id": entry["category_id"],
            "mask": entry["segmentation"],
        }
        item.update({key: entry[key] for key in ("keypoints", "keypoint_scores") if key in entry})
        answer.append(item)
    return sorted(answer, key=lambda item: -item["score"]), detections
