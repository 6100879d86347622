"""Which ground-truth image a results entry is for, when it names its file.

`maskrcnn predict` numbers images by their place among its inputs and writes each entry's
`file_name` beside its `image_id`; a ground truth made by a labelling tool numbers them in its
own order. COCO scoring matches by id alone, so results of the right images under other ids
would be scored against the wrong pictures without a word: entries that carry a file name
are matched to the ground truth by it instead.
"""

from pathlib import Path

from maskrcnn.data.coco import CocoDataset


def match_by_file_name(source: str, results: list[dict], dataset: CocoDataset) -> tuple[list[dict], str]:
    """The results with the `image_id` of the ground-truth image each entry's `file_name` names
    (entries without one keep theirs), and one line saying what changed ("" if nothing).

    A file name matches an image of the split when it is the same file (resolved from the
    working folder against the split's image folder), or ends with the image's `file_name`, or
    has its base name when only one image of the split does. Entries of images that are not in
    the split are left out and counted: they cannot be scored."""
    lookup = _Lookup(dataset)
    matched, renumbered, missing = [], 0, {}
    for entry in results:
        name = entry.get("file_name")
        if not isinstance(name, str):
            matched.append(entry)
            continue
        image_id = lookup.find(name)
        if image_id is None:
            missing[name] = missing.get(name, 0) + 1
            continue
        if image_id != entry.get("image_id"):
            entry, renumbered = {**entry, "image_id": image_id}, renumbered + 1
        matched.append(entry)
    parts = []
    if renumbered:
        parts.append(
            f"{_entries(renumbered)} took the image_id of the ground truth's image of their file_name"
        )
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        count, where = sum(missing.values()), dataset.annotation_file
        images = f"{len(missing)} image{'s' if len(missing) > 1 else ''}"
        parts.append(f"{_entries(count)} of {images} not in {where} left out ({shown})")
    return matched, f"{source}: {'; '.join(parts)}" if parts else ""


class _Lookup:
    """The split's images by resolved path, by file_name and by base name."""

    def __init__(self, dataset: CocoDataset):
        names = {record.file_name: record.image_id for record in dataset.records}
        self.by_path = {_resolved(dataset.image_dir / name): i for name, i in names.items()}
        self.by_parts = {Path(name).parts: i for name, i in names.items()}
        self.by_base: dict[str, list[int]] = {}
        for name, image_id in names.items():
            self.by_base.setdefault(Path(name).name, []).append(image_id)
        self.found: dict[str, int | None] = {}  # a file's entries are many detections

    def find(self, name: str) -> int | None:
        if name not in self.found:
            self.found[name] = self._find(name)
        return self.found[name]

    def _find(self, name: str) -> int | None:
        found = self.by_path.get(_resolved(Path(name)))
        if found is not None:
            return found
        parts = Path(name).parts
        for start in range(len(parts)):  # the longest ending of the name that is a file_name
            found = self.by_parts.get(parts[start:])
            if found is not None:
                return found
        same_base = self.by_base.get(Path(name).name, [])
        return same_base[0] if len(same_base) == 1 else None


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop of links, a name the system refuses
        return path
