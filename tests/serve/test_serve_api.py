"""POST /v1/predict answers what `model.predict` and `detections_to_coco` give for the image, in
every form the API offers; GET /v1/model, /healthz, /metrics and the web page."""

import dataclasses
import io

import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import encoded, expected_answer, picture, serving

from maskrcnn.data.images import load_image
from maskrcnn.serve.uploads import decode_image


def test_predict_raw_body_is_the_models_answer(model, tmp_path):
    data = encoded(picture(0))
    with serving(model) as client:
        response = client.post(
            "/v1/predict?score_threshold=0", content=data, headers={"Content-Type": "image/png"}
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    expected, detections = expected_answer(model, data, tmp_path)
    assert answer["image"] == {"width": 64, "height": 48}
    assert len(expected) > 0
    assert answer["detections"] == expected
    assert set(answer["timing"]) == {"decode_ms", "queue_ms", "inference_ms", "encode_ms", "total_ms"}
    assert all(value >= 0 for value in answer["timing"].values())
    # The RLE masks are the model's masks, pixel for pixel.
    scores = [d["score"] for d in answer["detections"]]
    assert scores == sorted(scores, reverse=True)
    masks = detections["masks"].numpy()
    order = np.argsort(-detections["scores"].numpy(), kind="stable")
    for item, index in zip(answer["detections"], order):
        decoded = mask_util.decode({"size": item["mask"]["size"], "counts": item["mask"]["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), masks[index])
        assert item["class_name"] == ("circle", "square")[item["label"] - 1]
        assert item["category_id"] == (7, 9)[item["label"] - 1]


def test_multipart_field_file_answers_as_the_raw_body(model):
    data = encoded(picture(1), "JPEG")
    with serving(model) as client:
        raw = client.post("/v1/predict?score_threshold=0", content=data)
        form = client.post("/v1/predict?score_threshold=0", files={"file": ("x.jpg", data, "image/jpeg")})
    assert raw.status_code == form.status_code == 200
    assert form.json()["detections"] == raw.json()["detections"]
    assert len(raw.json()["detections"]) > 0


def test_polygons_are_detections_to_cocos_polygons(model, tmp_path):
    data = encoded(picture(2))
    with serving(model) as client:
        response = client.post("/v1/predict?score_threshold=0&mask_format=polygons", content=data)
    expected, _ = expected_answer(model, data, tmp_path, polygons=True)
    detections = response.json()["detections"]
    assert detections == expected
    assert any(item["mask"] for item in detections)
    assert all(isinstance(item["mask"], list) for item in detections)


def test_score_threshold_keeps_what_scores_at_least_it(model):
    data = encoded(picture(3))
    with serving(model) as client:
        everything = client.post("/v1/predict?score_threshold=0", content=data).json()["detections"]
        scores = sorted({d["score"] for d in everything})
        assert len(scores) >= 3
        middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two scores
        some = client.post(f"/v1/predict?score_threshold={middle}", content=data).json()["detections"]
        default = client.post("/v1/predict", content=data).json()["detections"]
    assert some == [d for d in everything if d["score"] >= middle]
    assert 0 < len(some) < len(everything)
    assert default == [d for d in everything if d["score"] >= 0.5]  # the default threshold


def test_the_default_threshold_is_every_prediction_paths_one(model, monkeypatch):
    from maskrcnn import choices

    data = encoded(picture(3))
    with serving(model) as client:
        everything = client.post("/v1/predict?score_threshold=0", content=data).json()["detections"]
    scores = sorted({d["score"] for d in everything})
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two scores
    monkeypatch.setattr(choices, "PREDICT_SCORE_THRESHOLD", middle)  # the one place it is written
    with serving(model) as client:
        default = client.post("/v1/predict", content=data).json()["detections"]
    assert default == [d for d in everything if d["score"] >= middle]
    assert 0 < len(default) < len(everything)


def test_keypoint_model_answers_keypoints(keypoint_model, tmp_path):
    data = encoded(picture(4))
    with serving(keypoint_model) as client:
        answer = client.post("/v1/predict?score_threshold=0", content=data).json()
        described = client.get("/v1/model").json()
    expected, _ = expected_answer(keypoint_model, data, tmp_path)
    assert answer["detections"] == expected
    assert len(answer["detections"][0]["keypoints"]) == 4 * 3
    assert len(answer["detections"][0]["keypoint_scores"]) == 4
    assert described["keypoints"] == {
        "names": ["top", "right", "bottom", "left"],
        "skeleton": [[1, 2], [2, 3], [3, 4]],
    }


def test_model_describes_classes_config_limits_and_device(model):
    with serving(model, max_batch=3, max_wait_ms=7, max_body_bytes=12345, max_image_pixels=999) as client:
        described = client.get("/v1/model").json()
    assert described["classes"] == [
        {"label": 1, "name": "circle", "category_id": 7},
        {"label": 2, "name": "square", "category_id": 9},
    ]
    # two classes, three labels: label 0 is the background (the config's model.num_classes)
    assert (described["num_classes"], described["num_labels"]) == (2, 3)
    assert described["keypoints"] is None
    config = dataclasses.asdict(model.config)
    assert described["input"]["min_size"] == config["input"]["min_size"]
    assert described["input"]["pixel_mean"] == list(config["input"]["pixel_mean"])
    assert described["config"]["class_names"] == list(model.config.class_names)
    assert described["config"]["backbone"]["stage_blocks"] == list(model.config.backbone.stage_blocks)
    assert described["limits"] == {
        "max_body_bytes": 12345,
        "max_image_pixels": 999,
        "max_batch": 3,
        "max_wait_ms": 7,
    }
    assert described["device"] == "cpu"


def _samples(text: str) -> dict:
    """{(sample name, sorted label items): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_errors_and_batches(model):
    data = encoded(picture(5))
    with serving(model, max_batch=4) as client:
        for _ in range(3):
            assert client.post("/v1/predict?score_threshold=0", content=data).status_code == 200
        assert client.post("/v1/predict", content=b"not an image").status_code == 400
        assert client.post("/v1/predict?score_threshold=7", content=data).status_code == 400
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = _samples(response.text)

    def requests(endpoint, status):
        return samples.get(("maskrcnn_requests_total", (("endpoint", endpoint), ("status", status))), 0)

    assert requests("/v1/predict", "200") == 3
    assert requests("/v1/predict", "400") == 2
    assert requests("other", "404") == 1
    assert requests("/healthz", "200") == 1
    assert samples[("maskrcnn_errors_total", (("kind", "bad_request"),))] == 2
    assert samples[("maskrcnn_errors_total", (("kind", "not_found"),))] == 1
    assert samples[("maskrcnn_request_latency_seconds_count", (("endpoint", "/v1/predict"),))] == 5
    # The three images that reached the model, one pass each (nothing else was waiting).
    assert samples[("maskrcnn_batch_size_count", ())] == 3
    assert samples[("maskrcnn_batch_size_bucket", (("le", "1.0"),))] == 3
    assert ("maskrcnn_batch_size_bucket", (("le", "4.0"),)) in samples
    assert samples[("maskrcnn_queue_depth", ())] == 0


def _uint16_image() -> np.ndarray:
    """(48, 64) uint16 whose values need all 16 bits: its 8-bit reading would differ."""
    rng = np.random.default_rng(6)
    pixels = rng.integers(1000, 4000, size=(48, 64)).astype(np.uint16)
    pixels[10:30, 20:50] = rng.integers(30000, 60000, size=(20, 30)).astype(np.uint16)
    return pixels


def _tiff(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="minisblack")  # (3, H, W): three planes
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["png", "tiff", "tiff_planes"])
def test_16_bit_images_are_read_at_full_precision(model, kind, tmp_path):
    pixels = _uint16_image()
    if kind == "tiff_planes":
        pixels = np.stack([pixels, pixels[::-1], pixels[:, ::-1]])  # (3, H, W): channels from planes
    data = _tiff(pixels) if kind.startswith("tiff") else encoded(pixels)
    decoded = decode_image(data, 0)
    channels_last = pixels.transpose(1, 2, 0) if kind == "tiff_planes" else pixels
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, channels_last)

    with serving(model) as client:
        answer = client.post("/v1/predict?score_threshold=0", content=data).json()["detections"]
    suffix = ".png" if kind == "png" else ".tif"
    expected, _ = expected_answer(model, data, tmp_path, suffix=suffix)
    assert answer == expected
    # What an 8-bit reading of the same image gives is another answer: the comparison tells them apart.
    eight_bit = (pixels >> 8).astype(np.uint8)
    coarse, _ = expected_answer(model, _tiff(eight_bit) if suffix == ".tif" else encoded(eight_bit), tmp_path)
    assert coarse != expected


def test_tiled_request_answers_full_size_masks_as_tiled_predict(model, tmp_path):
    data = encoded(picture(7, height=150, width=200))
    with serving(model) as client:
        response = client.post("/v1/predict?score_threshold=0&tile=64&tile_overlap=16", content=data)
    assert response.status_code == 200, response.text
    detections = response.json()["detections"]
    expected, _ = expected_answer(model, data, tmp_path, tile=64, tile_overlap=16)
    assert detections == expected
    assert len(detections) > 0
    assert all(item["mask"]["size"] == [150, 200] for item in detections)
    # The same image untiled is another answer: the option reached the model.
    untiled, _ = expected_answer(model, data, tmp_path)
    assert untiled != expected


def test_tile_without_overlap_uses_at_most_half_a_tile(model, tmp_path):
    data = encoded(picture(8, height=100, width=140))
    with serving(model) as client:
        response = client.post("/v1/predict?score_threshold=0&tile=64", content=data)
    assert response.status_code == 200, response.text
    expected, _ = expected_answer(model, data, tmp_path, tile=64, tile_overlap=32)
    assert response.json()["detections"] == expected


def test_health_page_and_static_files(model):
    with serving(model) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        page = client.get("/")
        script = client.get("/static/app.js")
        missing = client.get("/static/no-such-file.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert missing.status_code == 404 and "no-such-file.js" in missing.json()["error"]


def test_without_the_page_folder_the_page_is_a_json_404(model, tmp_path):
    with serving(model, static_dir=tmp_path / "absent") as client:
        page = client.get("/")
        script = client.get("/static/app.js")
        health = client.get("/healthz")
    assert page.status_code == 404 and "web page is not installed" in page.json()["error"]
    assert script.status_code == 404 and "error" in script.json()
    assert health.status_code == 200


def test_unknown_paths_and_wrong_methods_answer_json(model):
    with serving(model) as client:
        unknown = client.get("/v2/predict")
        wrong = client.get("/v1/predict")
        wrong_model = client.post("/v1/model")
    assert unknown.status_code == 404 and unknown.json() == {"error": "not found: /v2/predict"}
    assert wrong.status_code == 405 and "method GET is not allowed on /v1/predict" in wrong.json()["error"]
    assert wrong_model.status_code == 405 and "error" in wrong_model.json()


def test_uploads_of_other_formats_are_decoded_as_load_image_reads_files(tmp_path):
    pixels = picture(9)
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 200, np.uint8)])
    for name, data in {"rgba.png": encoded(rgba), "gray.bmp": encoded(pixels[..., 0], "BMP")}.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert np.array_equal(decode_image(data, 0), load_image(path, 0)), name
    assert Image.open(io.BytesIO(encoded(rgba))).mode == "RGBA"
