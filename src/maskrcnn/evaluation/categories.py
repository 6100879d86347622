"""Whether a split's categories are the ones a model (or a results file, or a training split)
predicts: COCO scoring matches detections to ground truth by category id alone, so ids that
name other classes, or no shared id at all, would be scored without a word."""

from maskrcnn.data.coco import CocoDataset

SHOWN = 8  # categories listed in a message


def model_categories(model) -> dict[int, str]:
    """The category ids a model's detections carry (its labels where it keeps none), with names."""
    ids = model.config.category_ids or range(1, model.config.num_classes)
    names = model.class_names[1:] if len(model.class_names) == model.config.num_classes else []
    return {category: (names[i] if i < len(names) else str(category)) for i, category in enumerate(ids)}


def split_categories(dataset: CocoDataset) -> dict[int, str]:
    """A split's category ids with their names."""
    return dict(zip(dataset.category_ids, dataset.class_names[1:]))


def check_categories(source: str, predicted: dict[int, str], dataset: CocoDataset) -> None:
    """Raise ValueError when no category id of `predicted` (id -> name; a name equal to its id
    stands for an unnamed one) is one of the split's, or when a shared id names another class
    in each: AP would be 0 everywhere, or one class's detections scored as another's."""
    split = split_categories(dataset)
    shared = sorted(set(predicted) & set(split))
    if not shared:
        raise ValueError(
            f"{source} and {dataset.annotation_file} share no category: its ids are {_listed(predicted)}, "
            f"the file's {_listed(split)}; evaluate on annotations of the model's categories"
        )
    renamed = [i for i in shared if predicted[i] != str(i) and predicted[i] != split[i]]
    if renamed:
        pairs = [f"{i} is {predicted[i]!r} there and {split[i]!r} here" for i in renamed[:SHOWN]]
        more = f" and {len(renamed) - SHOWN} more" if len(renamed) > SHOWN else ""
        raise ValueError(
            f"{dataset.annotation_file}: its category ids name other classes than {source}'s: id "
            f"{'; id '.join(pairs)}{more}; detections are matched by id, so give both files the same "
            "ids per class (convert both splits in one run, or renumber this file's categories)"
        )


def _listed(categories: dict[int, str]) -> str:
    shown = [f"{i} {name}" if name != str(i) else str(i) for i, name in sorted(categories.items())]
    return ", ".join(shown[:SHOWN]) + (f" and {len(shown) - SHOWN} more" if len(shown) > SHOWN else "")
