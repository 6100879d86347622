"""Training images decoded once into shared memory give exactly the batches read from disk give."""

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.config import InputConfig
from maskrcnn.data.coco import BadImageWarning, CocoDataset
from maskrcnn.data.image_cache import estimated_bytes, fill_image_cache, memory_limit_bytes
from maskrcnn.data.shapes import make_shapes
from maskrcnn.engine import distributed
from maskrcnn.engine.training_data import build_training_data
from maskrcnn.testing import shapes_training_config


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache") / "shapes"
    make_shapes(root, 6, 1, seed=3)
    return root


def batches(config, count: int):
    context = distributed.setup("cpu")
    dataset, loader = build_training_data(config, context, start_iter=0)
    return dataset, list(itertools.islice(iter(loader), count))


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second):
        assert len(images_a) == len(images_b)
        for a, b in zip(images_a, images_b):
            assert a.dtype == b.dtype and torch.equal(a, b)
        for a, b in zip(targets_a, targets_b):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key]


@pytest.mark.parametrize("workers", [0, 1])
def test_the_same_batches_with_the_cache_on_and_off(shapes, tmp_path, workers, capsys):
    common = [f"data.num_workers={workers}", "data.min_sizes_train=[96,128]", "data.flip_probability=0.5"]
    cached, on = batches(shapes_training_config(shapes, tmp_path, *common, "data.cache_images=true"), 8)
    assert "data.cache_images: 6 training images decoded into memory" in capsys.readouterr().out
    assert len(cached.image_cache) == 6
    assert all(
        pixels.is_shared() and target["masks"].is_shared() for pixels, target in cached.image_cache.values()
    )
    plain, off = batches(shapes_training_config(shapes, tmp_path, *common, "data.cache_images=false"), 8)
    assert plain.image_cache == {}
    assert_same_batches(on, off)


def test_a_set_over_the_limit_is_read_from_disk(shapes, tmp_path):
    config = shapes_training_config(shapes, tmp_path)
    dataset = CocoDataset(config.data.train_json, config.data.train_images)
    needed = estimated_bytes(dataset, 3)  # RGB, one byte per channel
    assert needed == sum(r.height * r.width * (3 + len(r.instances)) for r in dataset.records)
    message = fill_image_cache(dataset, needed - 1)
    assert "need about" in message and "data.cache_images_max_mb" in message
    assert dataset.image_cache == {}
    assert fill_image_cache(dataset, needed).startswith("data.cache_images: 6 training images")


def test_a_sample_is_the_callers_to_change(shapes, tmp_path):
    config = shapes_training_config(shapes, tmp_path)
    dataset = CocoDataset(config.data.train_json, config.data.train_images)
    fill_image_cache(dataset, 2**30)
    image, target = dataset[0]
    expected = target["masks"].clone(), target["boxes"].clone()
    target["masks"].zero_()
    target["boxes"].add_(5)
    image.zero_()
    again_image, again = dataset[0]
    assert torch.equal(again["masks"], expected[0]) and torch.equal(again["boxes"], expected[1])
    assert again_image.abs().sum() > 0


def write_split(tmp_path, images: dict[str, np.ndarray | None]):
    """A COCO file over `images` (file name -> pixels; None: the file is missing), one square each."""
    folder = tmp_path / "images"
    folder.mkdir()
    entries, annotations = [], []
    for number, (name, pixels) in enumerate(images.items(), start=1):
        if pixels is not None:
            Image.fromarray(pixels).save(folder / name)
        entries.append({"id": number, "file_name": name, "height": 10, "width": 12})
        polygon = [[2, 2, 8, 2, 8, 7, 2, 7]]
        annotations.append({"id": number, "image_id": number, "category_id": 1, "segmentation": polygon})
        annotations[-1].update(iscrowd=0, bbox=[2, 2, 6, 5])
    split = {"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "cell"}]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    return tmp_path / "split.json", folder


def test_sixteen_bit_images_are_cached_in_their_own_type(tmp_path):
    rng = np.random.default_rng(0)
    dim = rng.integers(100, 240, size=(10, 12), dtype=np.uint16)  # microscopy: a sliver of 65535
    paths = write_split(tmp_path, {"a.png": dim, "b.png": dim[::-1].copy()})
    gray = InputConfig(channels=1, pixel_mean=(0.5,), pixel_std=(0.25,))
    cached, plain = CocoDataset(*paths, input_config=gray), CocoDataset(*paths, input_config=gray)
    fill_image_cache(cached, 2**30)
    assert cached.image_cache[0][0].dtype == torch.uint16  # two bytes a pixel, not four
    for index in range(2):
        image, target = cached[index]
        expected_image, expected_target = plain[index]
        assert torch.equal(image, expected_image) and torch.equal(target["masks"], expected_target["masks"])
    assert cached[0][0].std() > 0.15  # percentile-normalized on every read, as uncached


def test_bad_images_fail_before_training_or_are_left_to_their_warning(tmp_path):
    good = np.full((10, 12, 3), 90, dtype=np.uint8)
    paths = write_split(tmp_path, {"good.png": good, "missing.png": None})
    with pytest.raises(ValueError, match="missing.png"):
        fill_image_cache(CocoDataset(*paths), 2**30)
    skipping = CocoDataset(*paths, skip_bad_images=True)
    assert fill_image_cache(skipping, 2**30).startswith("data.cache_images: 1 training images")
    assert list(skipping.image_cache) == [0]
    with pytest.warns(BadImageWarning, match="missing.png"):
        assert skipping[1] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert skipping[0] is not None


def test_the_default_limit_is_a_share_of_the_machine(monkeypatch):
    assert memory_limit_bytes(512) == 512 * 2**20
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = memory_limit_bytes(0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert memory_limit_bytes(0) == alone // 4 > 0
