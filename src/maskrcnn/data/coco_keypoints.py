"""Keypoints of a COCO person-keypoints file: the categories' keypoint names and skeleton, each
annotation's [x1, y1, v1, x2, y2, v2, ...] list, and which keypoint a horizontal flip turns each
one into.

A file's keypoint names come from its categories' "keypoints" lists. One model predicts one list
of K keypoints for every RoI, so every category that has keypoints must have the same list (the
others have none: their instances get unlabelled keypoints); a file where they differ fails with
one ValueError naming the file and the categories. The skeleton (1-based index pairs, as COCO
writes it) is the union of the categories' skeletons; it is only drawn.

An annotation's keypoints are checked one by one: a list of 3K numbers, visibility flags v in
{0, 1, 2} (COCO's: 0 not labelled, 1 labelled but not visible, 2 visible) and finite coordinates
wherever v > 0. An annotation whose keypoints are broken keeps its box and mask, with its
keypoints unlabelled (v = 0), and is counted in the dataset's warning: the object is still there
for the box and mask heads. `num_keypoints` is what COCO defines it as, the number of points with
v > 0, recomputed from the flags (a file's value that disagrees is counted as repaired).
"""

import json
import math
import re
from collections import Counter
from dataclasses import dataclass

# A name's words: runs of lower-case letters (optionally after one capital), runs of capitals
# and runs of digits, so that "left_eye", "eye-left", "leftEye" and "LEFT EYE" all hold "left".
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_MIRRORED_WORDS = {"left": "right", "right": "left"}


@dataclass(frozen=True)
class KeypointSchema:
    """The keypoints of a dataset: names (K,), skeleton as 1-based (a, b) pairs, the ids of the
    categories that have them, and `flip` (K,): the index of each keypoint's mirror image."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    category_ids: frozenset[int]
    flip: tuple[int, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.names)


def mirrored_name(name: str) -> str:
    """The name with each word "left" and "right" exchanged, in the same case ("left_eye" ->
    "right_eye", "eye_Left" -> "eye_Right", "LEFT" -> "RIGHT"); other names are unchanged."""

    def swap(match: re.Match) -> str:
        word = match.group()
        other = _MIRRORED_WORDS.get(word.lower())
        if other is None:
            return word
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _WORD.sub(swap, name)


def keypoint_flip_map(names) -> tuple[int, ...]:
    """(K,) index of the keypoint each one becomes when the image is mirrored left-right: the one
    whose name has "left" and "right" exchanged (COCO person's "left_eye" <-> "right_eye"), or
    itself for a name without such a partner ("nose", or a "left_x" without a "right_x")."""
    names = list(names)
    index = {name: i for i, name in enumerate(names)}
    return tuple(index.get(mirrored_name(name), i) for i, name in enumerate(names))


def keypoint_schema(categories: list, path: str) -> KeypointSchema | None:
    """The keypoints the categories of file `path` share, or None when none has any.

    Raises ValueError naming the file and the field for a malformed "keypoints" or "skeleton",
    and naming the categories when two of them list different keypoints.
    """
    names: tuple[str, ...] | None = None
    first = ""  # the category that set `names`, for the message
    skeleton: list[tuple[int, int]] = []
    category_ids = set()
    for i, category in enumerate(categories):
        if not isinstance(category, dict):
            continue  # category_names reports it
        listed = _names(category.get("keypoints"), path, i)
        if not listed:
            continue
        described = f"{category.get('name', category.get('id'))!r} (id {category.get('id')})"
        if names is None:
            names, first = listed, described
        elif listed != names:
            raise ValueError(
                f"{path}: categories {first} and {described} list different keypoints "
                f"({_listed(names)} and {_listed(listed)}); one model predicts one list of keypoints "
                "for every category: give every category with keypoints the same 'keypoints'"
            )
        category_ids.add(category.get("id"))
        for pair in _skeleton(category.get("skeleton"), len(listed), path, i):
            if pair not in skeleton and pair[::-1] not in skeleton:
                skeleton.append(pair)
    if names is None:
        return None
    return KeypointSchema(names, tuple(skeleton), frozenset(category_ids), keypoint_flip_map(names))


def _names(value, path: str, index: int) -> tuple[str, ...]:
    if value is None:
        return ()
    field = f"categories[{index}].keypoints"
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise ValueError(f"{path}: field '{field}' must be a list of keypoint names, got {_show(value)}")
    repeated = [name for name, count in Counter(value).items() if count > 1]
    if repeated:
        raise ValueError(f"{path}: field '{field}' repeats the keypoint name {repeated[0]!r}")
    return tuple(value)


def _skeleton(value, count: int, path: str, index: int) -> list[tuple[int, int]]:
    if value is None:
        return []
    field = f"categories[{index}].skeleton"
    if not isinstance(value, list):
        raise ValueError(f"{path}: field '{field}' must be a list of [a, b] pairs, got {_show(value)}")
    pairs = []
    for j, pair in enumerate(value):
        fine = isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) and 1 <= v <= count for v in pair)
        if not fine or pair[0] == pair[1]:
            raise ValueError(
                f"{path}: field '{field}[{j}]' must join two keypoints numbered 1 to {count} "
                f"(1-based, as COCO writes it), got {_show(pair)}"
            )
        pairs.append((pair[0], pair[1]))
    return pairs


class KeypointChecker:
    """Reads the keypoints of annotations of the categories of `schema`, counting what it left
    unlabelled or repaired and why."""

    def __init__(self, schema: KeypointSchema):
        self.schema = schema
        self.unlabelled: Counter[str] = Counter()  # reason -> annotations whose keypoints were unusable
        self.recounted = 0  # num_keypoints that disagreed with the flags

    def read(self, annotation: dict, category_id: int) -> tuple[float, ...]:
        """The annotation's keypoints as a flat (3K,) tuple [x, y, v, ...] of floats, with x = y = 0
        where v = 0; all unlabelled (zeros) for a category without keypoints or broken keypoints."""
        count = self.schema.num_keypoints
        if category_id not in self.schema.category_ids:
            return (0.0,) * (3 * count)
        values = annotation.get("keypoints")
        problem = keypoint_problem(values, count)
        if problem:
            self.unlabelled[problem] += 1
            return (0.0,) * (3 * count)
        points = []
        for k in range(count):
            x, y, v = values[3 * k : 3 * k + 3]
            points.extend((float(x), float(y), float(v)) if v > 0 else (0.0, 0.0, 0.0))
        labelled = sum(1 for v in values[2::3] if v > 0)
        given = annotation.get("num_keypoints")
        if given is not None and not (_is_int(given) and given == labelled):
            self.recounted += 1
        return tuple(points)

    def summary(self) -> list[str]:
        """Clauses for the dataset's warning (none when every annotation's keypoints were fine)."""
        parts = []
        total = sum(self.unlabelled.values())
        if total:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.unlabelled.most_common())
            plural = "s" * (total > 1)
            parts.append(f"left the keypoints of {total} annotation{plural} unlabelled ({reasons})")
        if self.recounted:
            parts.append(
                f"recomputed num_keypoints of {self.recounted} annotation{'s' * (self.recounted > 1)} "
                "from the visibility flags"
            )
        return parts


def keypoint_problem(values, count: int) -> str | None:
    """What makes `values` unusable as the [x, y, v] * `count` keypoints of an annotation, or None."""
    if values is None:
        return "no keypoints"
    if not isinstance(values, list) or not all(_is_number(v) for v in values):
        return "malformed keypoints"
    if len(values) != 3 * count:
        return f"not {3 * count} keypoint values"
    if any(v not in (0, 1, 2) for v in values[2::3]):
        return "keypoint visibility not 0, 1 or 2"
    for k in range(count):
        x, y, v = values[3 * k : 3 * k + 3]
        if v > 0 and not (math.isfinite(x) and math.isfinite(y)):
            return "non-finite keypoint"
    return None


def _listed(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{len(names)}: {shown}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
