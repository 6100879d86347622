"""End to end on 16-bit, 1-channel microscopy tiles: train, then predict and eval the same way."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from maskrcnn.cli.main import main
from maskrcnn.config import load_config
from maskrcnn.data.coco import CocoDataset
from maskrcnn.engine.metrics import read_metrics
from maskrcnn.engine.trainer import train
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.preprocess import Preprocessor

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes.yaml"
HEIGHT, WIDTH = 64, 80


def write_nuclei_tiles(root: Path, nuclei_image, count: int = 4) -> Path:
    """`count` 16-bit TIFF tiles of nuclei and their COCO annotations; returns the JSON's path."""
    root.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        values, nuclei, _ = nuclei_image(HEIGHT, WIDTH, seed=index)
        name = f"tile{index}.tif"
        tifffile.imwrite(root / name, values)
        images.append({"id": index + 1, "file_name": name, "height": HEIGHT, "width": WIDTH})
        for center_y, center_x, radius in nuclei:
            angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
            polygon = np.stack([center_x + radius * np.cos(angles), center_y + radius * np.sin(angles)], 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": 1,
                    "segmentation": [polygon.ravel().round(2).tolist()],
                    "bbox": [center_x - radius, center_y - radius, 2 * radius, 2 * radius],
                    "area": math.pi * radius**2,
                    "iscrowd": 0,
                }
            )
    path = root / "nuclei.json"
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "nucleus"}]}
    path.write_text(json.dumps(coco))
    return path


@pytest.fixture
def preprocessor_inputs(monkeypatch) -> list[torch.Tensor]:
    """Every image the model's preprocessor receives: the model's normalized input."""
    seen: list[torch.Tensor] = []
    original = Preprocessor.forward

    def recording(self, images, resize=True):
        seen.extend(image.detach().cpu().clone() for image in images)
        return original(self, images, resize)

    monkeypatch.setattr(Preprocessor, "forward", recording)
    return seen


def test_16_bit_gray_tiles_train_predict_and_evaluate_alike(
    tmp_path, nuclei_image, preprocessor_inputs, capsys
):
    annotations = write_nuclei_tiles(tmp_path / "tiles", nuclei_image)
    run = tmp_path / "run"
    config = load_config(
        str(CONFIG),
        [
            f"data.train_json={annotations}",
            f"data.train_images={annotations.parent}",
            f"data.val_json={annotations}",  # the trainer's final evaluation reads the tiles too
            f"data.val_images={annotations.parent}",
            f"output_dir={run}",
            "data.num_workers=0",
            "data.images_per_batch=2",
            f"data.min_sizes_train=[{HEIGHT}]",
            f"data.max_size_train={WIDTH}",
            f"model.input.min_size={HEIGHT}",
            f"model.input.max_size={WIDTH}",
            "model.input.channels=1",
            "model.input.pixel_mean=[0.5]",
            "model.input.pixel_std=[0.25]",
            "model.roi_heads.score_threshold=0.0",
            "model.roi_heads.detections_per_image=20",
            "solver.max_iter=3",
            "solver.warmup_iters=1",
            "solver.log_period=1",
            "device=cpu",
        ],
    )
    model = train(config)
    assert model.backbone.trunk.stem.conv.weight.shape[1] == 1
    training_inputs = list(preprocessor_inputs)
    assert len(training_inputs) >= 6
    for image in training_inputs[:6]:  # the training batches: 3 iterations of 2 tiles
        assert image.shape[0] == 1 and 0 <= image.min() and image.max() <= 1
        assert image.std() > 0.15  # nuclei and background, not the old constant {0, 1/255}
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)

    # A checkpoint gives back the same normalization, and every path applies it alike.
    loaded = load_model(run / "model_final.pt", device="cpu")
    assert loaded.config.input == config.model.input
    dataset = CocoDataset(annotations, annotations.parent, input_config=loaded.config.input)
    expected = dataset[0][0]  # tile0, normalized as training saw it (before resizing)
    assert expected.shape == (1, HEIGHT, WIDTH)

    preprocessor_inputs.clear()
    out = tmp_path / "predicted"
    tile = annotations.parent / "tile0.tif"
    weights = str(run / "model_final.pt")
    code = main(["predict", str(tile), "--weights", weights, "--out", str(out), "--score-threshold", "0"])
    assert code == 0
    assert torch.equal(preprocessor_inputs[-1], expected)
    assert Image.open(out / "tile0.png").size == (WIDTH, HEIGHT)
    assert json.loads((out / "images.json").read_text())[0]["height"] == HEIGHT

    loaded.predict(tifffile.imread(tile))  # the raw uint16 pixels
    assert torch.equal(preprocessor_inputs[-1], expected)

    preprocessor_inputs.clear()
    code = main(
        ["eval", str(CONFIG), "--weights", weights, "--json", str(annotations)]
        + ["--images", str(annotations.parent), "--out", str(tmp_path / "eval"), "--vis", "1"]
    )
    assert code == 0
    # every tile once for AP, then tile0 for --vis; each normalized once, as in training
    tiles = [dataset[i][0] for i in range(len(dataset))] + [expected]
    assert len(preprocessor_inputs) == len(tiles)
    assert all(torch.equal(seen, tile) for seen, tile in zip(preprocessor_inputs, tiles))
    assert len(list((tmp_path / "eval" / "vis").glob("*.png"))) == 1

    capsys.readouterr()
    limited = ["predict", str(tile), "--weights", weights, "--out", str(tmp_path / "limited")]
    assert main([*limited, "--max-image-pixels", "1000"]) == 1
    error = capsys.readouterr().err
    assert str(tile) in error and "80 x 64 pixels" in error and "--max-image-pixels" in error
