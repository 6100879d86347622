"""The keypoint settings that follow the data: a training set's keypoint names and skeleton, and
the OKS sigmas keypoint AP is scored with.

COCO's keypoint AP matches a detection to an object by its object keypoint similarity (OKS),
exp(-d^2 / (2 s^2 k^2)) averaged over the object's labelled keypoints, where d is a keypoint's
distance to its ground truth, s^2 the object's area and k = 2 sigma a per-keypoint tolerance
(wide for hips, narrow for eyes). The sigmas belong to the keypoints, so a model whose keypoints
are not COCO's 17 person keypoints needs its own.

Free of torch, as the command line's checks are.
"""

from collections.abc import Sequence
from dataclasses import replace

from maskrcnn.config import KeypointHeadConfig

# COCO's person sigmas (pycocotools' COCOeval defaults), in COCO's keypoint order: nose, eyes,
# ears, shoulders, elbows, wrists, hips, knees, ankles, the paired ones left then right.
COCO_PERSON_OKS_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
SETTING = "model.keypoint_head.oks_sigmas"
OPTION = "--oks-sigmas"


def format_sigmas(sigmas: Sequence[float]) -> str:
    """0.05,0.05,0.1: the sigmas as `--oks-sigmas` takes them."""
    return ",".join(f"{s:g}" for s in sigmas)


def resolve_oks_sigmas(
    num_keypoints: int,
    option: Sequence[float] | None = None,
    configured: Sequence[float] = (),
    setting: str = SETTING,
) -> tuple[float, ...]:
    """The (K,) sigmas keypoint AP uses for a model of `num_keypoints` keypoints: `option`
    (`--oks-sigmas`) if given, else `configured` (the value of `setting`) if not empty, else
    COCO's person sigmas when there are 17 keypoints.

    Raises ValueError naming `--oks-sigmas` or `setting` when the sigmas given are not one per
    keypoint, or when none are given for a model of other than 17 keypoints.
    """
    if option:
        if len(option) != num_keypoints:
            raise ValueError(
                f"{OPTION} {format_sigmas(option)}: {len(option)} sigmas for the {num_keypoints} "
                "keypoints; give one per keypoint"
            )
        return tuple(float(s) for s in option)
    if configured:
        if len(configured) != num_keypoints:
            raise ValueError(
                f"{setting}={list(configured)}: {len(configured)} sigmas for {num_keypoints} keypoints; "
                f"give one per keypoint (or {OPTION})"
            )
        return tuple(float(s) for s in configured)
    if num_keypoints == len(COCO_PERSON_OKS_SIGMAS):
        return COCO_PERSON_OKS_SIGMAS
    raise ValueError(
        f"keypoint AP needs one OKS sigma per keypoint, and COCO's person sigmas are for 17 keypoints, "
        f"not {num_keypoints}: set {setting} (or give {OPTION} S1,...,S{num_keypoints})"
    )


def keypoint_head_for_dataset(head: KeypointHeadConfig, dataset, validation=None) -> KeypointHeadConfig:
    """The keypoint head's config with the training set's keypoints: names and skeleton from the
    file's keypoint categories, num_keypoints the number of names (the config's sigmas are kept).

    dataset, validation: CocoDatasets read with keypoints. Raises ValueError naming the files
    when the validation split's keypoints differ from the training set's, and the setting when
    `oks_sigmas` are not one per keypoint.
    """
    names = tuple(dataset.keypoint_names)
    if validation is not None and tuple(validation.keypoint_names) != names:
        raise ValueError(
            f"{validation.annotation_file}: keypoints {', '.join(validation.keypoint_names)} differ from "
            f"those of the training set {dataset.annotation_file} ({', '.join(names)}): the model is "
            "scored on the keypoints it learns"
        )
    if head.oks_sigmas and len(head.oks_sigmas) != len(names):
        raise ValueError(
            f"{SETTING}={list(head.oks_sigmas)}: {len(head.oks_sigmas)} sigmas, but "
            f"{dataset.annotation_file} has {len(names)} keypoints ({', '.join(names)}): one per keypoint"
        )
    return replace(head, names=names, skeleton=tuple(dataset.keypoint_skeleton), num_keypoints=len(names))
