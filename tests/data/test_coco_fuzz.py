"""Hostile COCO files: a mutated annotation file is either cleaned (bad annotations dropped and
counted in one AnnotationWarning) or refused with one ValueError naming the file and the field.

Nothing here reads an image: what is kept is checked by building its training target
(`_target`, what `dataset[i]` returns beside the image) and its evaluation ground truth.
"""

import copy
import json
import math
import warnings

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskrcnn.data.coco import AnnotationWarning, CocoDataset, _target
from maskrcnn.data.coco_annotations import _compressed_runs, to_rle
from maskrcnn.evaluation.coco import coco_ground_truth

SIZES = {1: (10, 12), 2: (8, 9)}  # image id -> (height, width)


def rectangle(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def column_major_runs(mask):
    """COCO's uncompressed RLE, written here from its definition: run lengths over the pixels in
    column-major order, the first run counting zeros."""
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0] + runs


def compressed(mask) -> str:
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode()


# Compressed RLE strings of a 10x13 and a 9x12 mask: runs adding up to 130 and 108, not 120.
TOO_LONG = compressed(rectangle(10, 13, 0, 3, 0, 4))
TOO_SHORT = compressed(rectangle(9, 12, 0, 3, 0, 4))


def valid_file() -> dict:
    """Two images, two categories (ids 1 and 7), every kind of segmentation, one crowd region."""
    blob = rectangle(8, 9, 1, 4, 2, 6)
    crowd = rectangle(8, 9, 5, 8, 0, 9)
    annotations = [
        {"image_id": 1, "category_id": 1, "segmentation": [[3, 2, 7, 2, 7, 5, 3, 5]], "bbox": [3, 2, 4, 3]},
        {"image_id": 1, "category_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4], [6, 6, 11, 6, 11, 9, 6, 9]]},
        {
            "image_id": 2,
            "category_id": 7,
            "segmentation": {"size": [8, 9], "counts": column_major_runs(blob)},
        },
        {
            "image_id": 1,
            "category_id": 1,
            "segmentation": {"size": [10, 12], "counts": compressed(rectangle(10, 12, 0, 3, 8, 12))},
            "bbox": [8, 0, 4, 3],
        },
        {
            "image_id": 2,
            "category_id": 1,
            "segmentation": {"size": [8, 9], "counts": column_major_runs(crowd)},
            "bbox": [0, 5, 9, 3],
            "iscrowd": 1,
        },
        # one polygon without the outer list, as some tools write it
        {"image_id": 2, "category_id": 7, "segmentation": [1, 1, 5, 1, 3, 6], "bbox": [1, 1, 4, 5]},
    ]
    for number, annotation in enumerate(annotations, start=1):
        annotation["id"] = number
        annotation["area"] = 1.0
    images = [
        {"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w}
        for image_id, (h, w) in SIZES.items()
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories, "info": {}}


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=20),
    st.sampled_from([-(2**40), 2**31, 2**63, 10**30, 12, 10]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 0.5, 1e7]),
    st.text(max_size=4),
    st.sampled_from(["1", "0", "", "3,2,4,3", "abc", "P13700000`1"]),
    st.text(alphabet=[chr(c) for c in range(48, 112)], min_size=1, max_size=12),  # RLE-like strings
    st.lists(st.integers(min_value=-2, max_value=60), max_size=9),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=7),
    st.recursive(
        st.none() | st.integers(-2, 5) | st.text(max_size=2),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
        max_leaves=6,
    ),
    st.sampled_from([{}, [], [[]], {"size": [10, 12]}, {"counts": []}, {"size": [10, 12], "counts": [120]}]),
)


@st.composite
def runs_summing_to(draw, total):
    """A valid uncompressed RLE's counts: non-negative runs that add up to `total` pixels."""
    cuts = sorted(draw(st.lists(st.integers(0, total), max_size=6)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def masks(height, width):
    return st.lists(st.booleans(), min_size=height * width, max_size=height * width).map(
        lambda bits: np.array(bits, dtype=np.uint8).reshape(height, width)
    )


COORDINATE = st.one_of(
    st.integers(-3, 15),
    st.floats(-3, 15),
    st.sampled_from([1e9, -1e300, math.nan, math.inf, True, "3", None, 2**64]),
)
# Segmentations of image 1 (10x12): valid ones of every kind, and broken ones.
SEGMENTATION = st.one_of(
    st.fixed_dictionaries({"size": st.just([10, 12]), "counts": runs_summing_to(120)}),
    st.fixed_dictionaries({"size": st.just([10, 12]), "counts": masks(10, 12).map(compressed)}),
    st.fixed_dictionaries(
        {
            "size": st.sampled_from([[10, 12], [12, 10], [10, 12.0], [10], "10x12", None]),
            "counts": st.one_of(
                st.lists(st.integers(-1, 130), max_size=5),
                st.text(alphabet=[chr(c) for c in range(40, 120)], max_size=12),
                st.sampled_from([compressed(rectangle(h, w, 0, 2, 0, 2)) for h, w in ((10, 11), (9, 12))]),
                HOSTILE,
            ),
        }
    ),
    st.lists(st.lists(COORDINATE, max_size=10), max_size=3),
    st.lists(COORDINATE, max_size=9),  # one polygon without the outer list
    HOSTILE,
)


SECTIONS = ["annotations"] * 6 + ["images"] * 2 + ["categories"]  # whole sections: tested below
STOP_PER_TEN = {1: 0, 2: 2, 3: 4}  # chance in ten of mutating a whole entry, a field; deeper: 5


@st.composite
def a_place(draw, document):
    """A path into the document (dict keys and list indices), descending from a section."""
    path, node = (), document
    while True:
        if not path:
            key = draw(st.sampled_from([k for k in SECTIONS if k in document] or list(document)))
        else:
            children = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not children or draw(st.sampled_from(range(10))) < STOP_PER_TEN.get(len(path), 5):
                return path
            key = draw(st.sampled_from(children))
        path, node = (*path, key), node[key]
        if not isinstance(node, (dict, list)):
            return path


def parent_of(document, path):
    node = document
    for key in path[:-1]:
        node = node[key]
    return node


OPERATIONS = ["replace", "replace", "delete", "duplicate", "drop last", "segment"]


@st.composite
def mutated_files(draw):
    """(document, paths of the mutations): one to three edits of a valid file."""
    document = valid_file()
    touched = []
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(OPERATIONS))
        if operation == "segment":  # a new segmentation for one of image 1's annotations
            annotations = document.get("annotations")
            index = draw(st.sampled_from([0, 1, 3]))
            if not isinstance(annotations, list) or len(annotations) <= index:
                continue
            if not isinstance(annotations[index], dict):
                continue
            annotations[index]["segmentation"] = draw(SEGMENTATION)
            touched.append(("annotations", index, "segmentation"))
            continue
        path = draw(a_place(document))
        parent, key = parent_of(document, path), path[-1]
        if operation == "replace":
            parent[key] = draw(HOSTILE)
        elif operation == "delete":
            del parent[key]
        elif operation == "duplicate" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(draw(st.sampled_from(parent[key]))))
        elif operation == "drop last" and isinstance(parent[key], list) and parent[key]:
            parent[key].pop()  # an odd coordinate count, a shortened RLE, a lost image
        else:
            continue  # nothing to duplicate or shorten: left as it was
        touched.append(path)
    return document, touched


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plainly_broken(annotation, image_ids, category_ids) -> bool:
    """An annotation no cleaning may keep, by rules written here independently of the loader."""
    if not isinstance(annotation, dict):
        return True
    image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
    iscrowd, segmentation = annotation.get("iscrowd"), annotation.get("segmentation")
    bbox = annotation.get("bbox")
    return (
        not is_int(image_id)
        or image_id not in image_ids
        or not is_int(category_id)
        or category_id not in category_ids
        or not (iscrowd is None or (is_int(iscrowd) and iscrowd in (0, 1)))
        or not isinstance(segmentation, (list, dict))
        or not segmentation
        or (
            bbox is not None
            and not (
                isinstance(bbox, list)
                and len(bbox) == 4
                and all(is_number(v) and math.isfinite(v) for v in bbox)
                and bbox[2] > 0
                and bbox[3] > 0
            )
        )
    )


def build(tmp_path, document, name="fuzz.json"):
    """CocoDataset of `document` and the warnings it gave, or the ValueError it raised."""
    path = tmp_path / name
    path.write_text(json.dumps(document))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = CocoDataset(path, tmp_path)
        except ValueError as error:
            return path, None, error, caught
    return path, dataset, None, caught


def check_kept_annotations_decode(dataset):
    """Every kept instance and crowd region rasterizes, inside its image, with a proper box."""
    for record in dataset.records:
        height, width = record.height, record.width
        target = _target(record)
        count = len(record.instances)
        assert target["masks"].shape == (count, height, width)
        assert set(target["masks"].unique().tolist()) <= {0, 1}
        assert target["labels"].tolist() == [i.label for i in record.instances]
        assert all(1 <= label < dataset.num_classes for label in target["labels"].tolist())
        boxes = target["boxes"]
        assert boxes.shape == (count, 4) and bool(boxes.isfinite().all())
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
        assert bool((boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        for region in record.crowd:
            assert mask_utils.decode(to_rle(region.segmentation, height, width)).shape == (height, width)
        for kept in record.instances + record.crowd:
            if isinstance(kept.segmentation, dict):
                # pycocotools decodes too few runs without a word, leaving pixels undefined.
                counts = kept.segmentation["counts"]
                runs = counts if isinstance(counts, list) else _compressed_runs(counts)
                assert runs is not None and min(runs) >= 0 and sum(runs) == height * width
    ground_truth = coco_ground_truth(dataset)
    for annotation in ground_truth.dataset["annotations"]:
        assert annotation["area"] == float(ground_truth.annToMask(annotation).sum())


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutated_files())
def test_a_mutated_file_is_cleaned_or_refused_naming_the_field(tmp_path, case):
    document, touched = case
    path, dataset, error, caught = build(tmp_path, document)
    only_annotations = all(p[0] == "annotations" and len(p) >= 2 for p in touched)
    if error is not None:
        message = str(error)
        assert message.startswith(f"{path}: "), message
        assert "field '" in message, message
        # One bad annotation never stops a run: only the file's structure can be fatal.
        assert not only_annotations, (touched, message)
        return

    ours = [w for w in caught if issubclass(w.category, AnnotationWarning)]
    assert len(ours) <= 1
    assert not [w for w in caught if issubclass(w.category, UserWarning) and w not in ours]
    kept = sum(len(r.instances) + len(r.crowd) for r in dataset.records)
    dropped = len(document["annotations"]) - kept
    # Every annotation of the file is kept (as an object or a crowd region) or counted as dropped.
    if dropped:
        assert len(ours) == 1
        message = str(ours[0].message)
        assert message.startswith(f"{path}: dropped {dropped} annotation"), message
    else:
        assert not ours or "dropped" not in str(ours[0].message)
    original = valid_file()
    same = lambda a, b: json.dumps(a) == json.dumps(b)  # noqa: E731 (True == 1 in Python, not in JSON)
    if same(document["images"], original["images"]) and same(document["categories"], original["categories"]):
        usable = [not plainly_broken(a, set(SIZES), {1, 7}) for a in document["annotations"]]
        assert kept <= sum(usable)
        # The annotations left exactly as they were are all kept.
        unchanged = {json.dumps(a) for a in original["annotations"]}
        assert kept >= sum(json.dumps(a) in unchanged for a in document["annotations"])
    check_kept_annotations_decode(dataset)


@pytest.mark.parametrize(
    "edit, reason",
    [
        ({"bbox": "3,2,4,3"}, "malformed box"),
        ({"bbox": [3, 2, True, 3]}, "malformed box"),
        ({"bbox": [3, 2, math.nan, 3]}, "malformed box"),
        ({"segmentation": None}, "no segmentation"),
        ({"segmentation": "0 0 4 0 4 4"}, "malformed segmentation"),
        ({"segmentation": [[3, 2, 7, 2, 7, 5, 3]]}, "malformed polygon"),
        ({"segmentation": [[3, 2, 7, 2, "7", 5, 3, 5]]}, "malformed polygon"),
        ({"segmentation": [[3, 2, 7, 2, 7, 5, 3, True]]}, "malformed polygon"),
        ({"segmentation": [[3, 2, 1e12, 2, 7, 5, 3, 5]]}, "polygon far outside the image"),
        ({"segmentation": [[3, 2, 7, 2, 7, 5, 3, -1e300]]}, "polygon far outside the image"),
        ({"segmentation": {"size": [10, 12], "counts": [0, 60, 59]}}, "malformed RLE"),  # 119 of 120
        ({"segmentation": {"size": [10, 12], "counts": [0, 60, 61]}}, "malformed RLE"),  # 121 of 120
        ({"segmentation": {"size": [10, 12], "counts": [60, True, 59]}}, "malformed RLE"),
        ({"segmentation": {"size": [10, 12], "counts": TOO_LONG}}, "malformed RLE"),
        ({"segmentation": {"size": [10, 12], "counts": TOO_SHORT}}, "malformed RLE"),
        ({"segmentation": {"size": [10, 12], "counts": "garbage!"}}, "malformed RLE"),
        ({"segmentation": {"size": [10, 11], "counts": [110]}}, "RLE size differs from the image size"),
        ({"segmentation": {"size": ["10", 12], "counts": [120]}}, "malformed RLE"),
        ({"category_id": None}, "category_id missing or not an integer"),
        ({"category_id": True}, "category_id missing or not an integer"),  # not category 1
        ({"category_id": [1]}, "category_id missing or not an integer"),
        ({"category_id": "1"}, "category_id missing or not an integer"),
        ({"category_id": 99}, "unknown category id"),
        ({"image_id": [1]}, "image_id missing or not an integer"),
        ({"image_id": True}, "image_id missing or not an integer"),  # not image 1
        ({"image_id": 3}, "unknown image id"),
        ({"iscrowd": "0"}, "iscrowd not 0 or 1"),
        ({"iscrowd": 2}, "iscrowd not 0 or 1"),
        ({"iscrowd": [1]}, "iscrowd not 0 or 1"),
        ({"iscrowd": math.nan}, "iscrowd not 0 or 1"),
    ],
)
def test_one_broken_annotation_is_dropped_for_its_reason(tmp_path, edit, reason):
    document = valid_file()
    document["annotations"][0].update(edit)
    path, dataset, error, caught = build(tmp_path, document)
    assert error is None, error
    messages = [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]
    assert len(messages) == 1 and messages[0].startswith(f"{path}: dropped 1 annotation (1 {reason}")
    assert len(dataset.records[0].instances) == 2  # the image's other two annotations stay
    check_kept_annotations_decode(dataset)


def test_missing_category_id_and_deleted_fields_are_dropped(tmp_path):
    document = valid_file()
    del document["annotations"][0]["category_id"]
    del document["annotations"][2]["segmentation"]
    path, _, error, caught = build(tmp_path, document)
    assert error is None
    messages = [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]
    assert len(messages) == 1 and messages[0].startswith(
        f"{path}: dropped 2 annotations (1 category_id missing or not an integer, 1 no segmentation);"
    )


def test_repeated_annotation_ids_keep_both_objects(tmp_path):
    # Our ground truth numbers annotations itself, so a repeated id loses nothing.
    document = valid_file()
    document["annotations"][1]["id"] = document["annotations"][0]["id"]
    _, dataset, error, caught = build(tmp_path, document)
    assert error is None and not [w for w in caught if issubclass(w.category, AnnotationWarning)]
    assert sum(len(r.instances) + len(r.crowd) for r in dataset.records) == 6
    assert len(coco_ground_truth(dataset).getAnnIds()) == 6


@pytest.mark.parametrize(
    "where, value, field",
    [
        ("images", {"width": True}, "images[0].width"),
        ("images", {"height": False}, "images[0].height"),
        ("images", {"width": 10**12}, "images[0].width"),
        ("images", {"width": 2**40, "height": 2**40}, "images[0].width"),
        ("images", {"width": "12"}, "images[0].width"),
        ("images", {"width": 12.0}, "images[0].width"),
        ("images", {"height": -10}, "images[0].height"),
        ("images", {"id": True}, "images[0].id"),
        ("images", {"id": None}, "images[0].id"),
        ("images", {"id": 2}, "images[1].id"),  # repeats image 2
        ("images", {"file_name": None}, "images[0].file_name"),
        ("images", {"file_name": "a\0.png"}, "images[0].file_name"),
        ("categories", {"id": True}, "categories[0].id"),
        ("categories", {"id": "1"}, "categories[0].id"),
        ("categories", {"id": 7}, "categories[1].id"),  # repeats category 7
        ("categories", {"id": 10**30}, "categories[0].id"),
        ("categories", {"name": ["cat"]}, "categories[0].name"),
    ],
)
def test_broken_image_or_category_fails_naming_the_field(tmp_path, where, value, field):
    document = valid_file()
    document[where][0].update(value)
    path, _, error, _ = build(tmp_path, document)
    assert error is not None
    assert str(error).startswith(f"{path}: field '{field}")


@pytest.mark.parametrize("value", [None, 5, "x", {"a": 1}])
def test_top_level_lists_of_the_wrong_type_name_the_field(tmp_path, value):
    for field in ("images", "annotations", "categories"):
        document = valid_file()
        document[field] = value
        path, _, error, _ = build(tmp_path, document)
        assert str(error) == f"{path}: field '{field}' must be a list, got {type(value).__name__}"


def test_a_huge_polygon_coordinate_is_dropped_at_once(tmp_path, monkeypatch):
    # pycocotools would walk a 1e9-pixel edge pixel by pixel (seconds) or overflow.
    document = valid_file()
    document["annotations"][0]["segmentation"] = [[3, 2, 1e9, 2, 1e9, 5, 3, 5]]
    del document["annotations"][0]["bbox"]  # the box would come from rasterizing it
    rasterized = []
    original = mask_utils.frPyObjects

    def recorded(polygons, *size):
        rasterized.append(polygons)
        return original(polygons, *size)

    monkeypatch.setattr(mask_utils, "frPyObjects", recorded)
    path, _, error, caught = build(tmp_path, document)
    assert rasterized and "1000000000" not in repr(rasterized)  # the others drawn, never this one
    assert error is None
    messages = [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]
    assert len(messages) == 1
    assert messages[0].startswith(f"{path}: dropped 1 annotation (1 polygon far outside the image);")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.integers(1, 9).flatmap(
        lambda h: st.integers(1, 9).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
                lambda bits: np.array(bits, dtype=np.uint8).reshape(h, w)
            )
        )
    )
)
def test_compressed_runs_read_pycocotools_strings(mask):
    assert _compressed_runs(compressed(mask)) == column_major_runs(mask)


def test_compressed_runs_refuse_what_is_not_an_rle_string():
    assert _compressed_runs("\x7f") is None  # outside the 64-character alphabet
    assert _compressed_runs("P") is None  # a continued group that never ends
    assert _compressed_runs("ooooooo1") is None  # more than 32 bits
