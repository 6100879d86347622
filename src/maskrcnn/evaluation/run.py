"""What `maskrcnn eval` does once its inputs are checked: COCO AP of a model (or of a results
file) on a COCO-format split, and the files it writes.

AP is scored against the split's annotations as a `CocoDataset` cleans them (broken ones
dropped and counted in its warning, crowd regions kept as ignore regions). A keypoint model's
detections (or a results file's with `keypoints`) get keypoint AP too, with the OKS sigmas of
`--oks-sigmas`, the model's `model.keypoint_head.oks_sigmas` or COCO's person sigmas. Under torchrun
each process predicts its share of the images and rank 0 writes the merged results file,
the metrics and the plots.
"""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from maskrcnn.config import ConfigError, TrainConfig
from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.coco_annotations import rle_problem
from maskrcnn.engine import distributed, training_data
from maskrcnn.errors import OptionError, user_errors
from maskrcnn.evaluation import reports
from maskrcnn.evaluation.accuracy import format_accuracy
from maskrcnn.evaluation.categories import check_categories, model_categories
from maskrcnn.evaluation.coco import evaluate_results, predict_split
from maskrcnn.evaluation.confusion import CONFUSION_JSON, CONFUSION_PLOT
from maskrcnn.evaluation.keypoints import format_sigmas, resolve_oks_sigmas
from maskrcnn.evaluation.reports import METRICS_FILE, PR_PLOT_FILE, ReportSettings, format_metrics
from maskrcnn.evaluation.result_images import match_by_file_name
from maskrcnn.evaluation.results import write_json_atomic
from maskrcnn.files import atomic_output, picture_names
from maskrcnn.inference.manifest import OutputManifest
from maskrcnn.inference_settings import config_for_testing
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError
from maskrcnn.visualize import display_image, draw_instances

RESULTS_FILE = "results.json"
VIS_FOLDER = "vis"


def run_evaluation(
    config: TrainConfig,
    paths,
    weights: str | None,
    results_file: str | None,
    vis: int,
    device: str,
    precision: str,
    oks_sigmas: tuple[float, ...] | None = None,
    settings: ReportSettings | None = None,
) -> int:
    """`maskrcnn eval` once its inputs are checked (`cli.evaluate`); returns 0. paths: the split's
    `annotations` and `images`, the `out` folder and the config keys the user set (`explicit`);
    settings: the confusion matrix's matching and whether to compute the microscopy accuracy
    (None: the defaults). Raises OptionError for what the user can mend (one line, on every
    process)."""
    try:
        context = distributed.setup(device)
    except (ValueError, RuntimeError) as error:  # an unknown or unavailable --device
        raise OptionError(f"--device {device}: {error}") from None
    try:
        with user_errors(ConfigError, CheckpointError, ValueError, OSError):
            if results_file:
                if not context.is_main:
                    return 0  # nothing to share: rank 0 scores the file
                results = _load_results(results_file)
                dataset = _split(config, paths, keypoints=any("keypoints" in r for r in results))
                results, matched = match_by_file_name(results_file, results, dataset)
                if matched:
                    print(matched)
                _check_results(results_file, results, dataset)
                if results:
                    predicted = {r["category_id"]: str(r["category_id"]) for r in results}
                    check_categories(results_file, predicted, dataset)
                model, sigmas = None, _results_sigmas(config, dataset, oks_sigmas)
            else:
                model, dataset, sigmas = _model_and_split(context, config, weights, paths, oks_sigmas)
                results = predict_split(model, dataset, context, precision=precision)
            if not context.is_main:
                return 0
            metrics, evaluations = evaluate_results(dataset, results, oks_sigmas=sigmas)
    finally:
        distributed.teardown(context)
    try:
        scored = (model, dataset, results, metrics, evaluations, settings or ReportSettings())
        _write_outputs(paths.out, scored, vis, precision, results_file)
    except (ValueError, OSError) as error:
        raise OptionError(f"{paths.out}: cannot write the outputs ({error})") from None
    masks = model.config.masks if model is not None else any("segmentation" in r for r in results)
    scored = ("bbox", "segm", "keypoints") if masks else ("bbox", "keypoints")
    print(format_metrics(metrics, tuple(t for t in scored if t in metrics)))
    if "accuracy" in metrics:
        print(format_accuracy(metrics["accuracy"]))
    print(f"metrics, results and plots written to {paths.out}")
    return 0


def _split(config, paths, input_config=None, keypoints: bool = False, masks: bool = True) -> CocoDataset:
    """The split to score, cleaned and normalized as a run's validation split is."""
    return training_data.scoring_split(
        paths.annotations, paths.images, config.data, input_config, keypoints, masks
    )


def _model_and_split(context, config, weights, paths, oks_sigmas):
    """The model, the split and the OKS sigmas (None without keypoints), on every process; if any
    process cannot have them, all raise (and none waits for the others in `predict_split`)."""
    model = dataset = sigmas = failure = None
    try:
        model = load_model(weights, device=context.device)
        model = _with_test_settings(model, config, paths.explicit or {}, weights, context)
        dataset = _split(config, paths, model.config.input, model.config.keypoints, model.config.masks)
        check_categories(weights, model_categories(model), dataset)
        sigmas = _model_sigmas(model, dataset, weights, oks_sigmas)
    except (ConfigError, CheckpointError, ValueError, OSError) as error:
        failure = error
    distributed.raise_if_any_failed(failure, context)
    return model, dataset, sigmas


def _with_test_settings(model, config: TrainConfig, explicit: dict, weights: str, context):
    """The model with the test-time settings the config file and the overrides set on top of
    its checkpoint's (`inference_settings`), each change said in one line."""
    from maskrcnn.modeling.build import build_model

    tested, lines = config_for_testing(model.config, config.model, explicit, weights)
    if context.is_main:
        for line in lines:
            print(line)
    if tested is model.config:
        return model
    rebuilt = build_model(tested)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.to(context.device).eval()


def _model_sigmas(model, dataset: CocoDataset, weights: str, oks_sigmas) -> tuple[float, ...] | None:
    """The sigmas to score the model's keypoints with, after checking that they are the split's."""
    if not model.config.keypoints:
        if oks_sigmas:
            raise ValueError(f"--oks-sigmas {format_sigmas(oks_sigmas)}: {weights} predicts no keypoints")
        return None
    head = model.config.keypoint_head
    names = tuple(dataset.keypoint_names)
    if len(names) != head.num_keypoints or (head.names and tuple(head.names) != names):
        predicted = ", ".join(head.names) if head.names else "unnamed"
        raise ValueError(
            f"{dataset.annotation_file}: {len(names)} keypoints ({', '.join(names)}), but {weights} "
            f"predicts {head.num_keypoints} ({predicted}): keypoint AP needs the keypoints the model learnt"
        )
    return resolve_oks_sigmas(
        head.num_keypoints, oks_sigmas, head.oks_sigmas, f"model.keypoint_head.oks_sigmas of {weights}"
    )


def _results_sigmas(config, dataset: CocoDataset, oks_sigmas) -> tuple[float, ...] | None:
    """The sigmas to score a results file's keypoints with (None when it has none)."""
    if not dataset.has_keypoints:
        if oks_sigmas:
            raise ValueError(f"--oks-sigmas {format_sigmas(oks_sigmas)}: the results have no keypoints")
        return None
    return resolve_oks_sigmas(len(dataset.keypoint_names), oks_sigmas, config.model.keypoint_head.oks_sigmas)


def _write_outputs(out: Path, scored: tuple, vis: int, precision: str, results_file: str | None):
    """results.json (a model's), metrics.json, the plots and vis/, replacing an earlier eval's
    outputs in `out` as a whole (engine/manifest.py)."""
    model, dataset, results, metrics, evaluations, settings = scored
    out.mkdir(parents=True, exist_ok=True)
    inputs = [dataset.annotation_file, *([results_file] if results_file else [])]
    manifest = OutputManifest(out, "eval", _written_by_eval, keep=inputs)
    pictures = vis_paths(dataset, vis, out / VIS_FOLDER) if model is not None else []
    outputs = ([out / RESULTS_FILE] if model is not None else []) + [out / METRICS_FILE]
    outputs += [out / PR_PLOT_FILE] if evaluations else []
    outputs += [out / CONFUSION_JSON, out / CONFUSION_PLOT]
    manifest.begin([*outputs, *pictures])
    if model is not None:
        write_json_atomic(results, out / RESULTS_FILE)
    reports.write_reports(metrics, evaluations, results, dataset, out, settings)
    if pictures:
        pictures = write_side_by_side(model, dataset, vis, out / VIS_FOLDER, precision)
    removed = manifest.finish([*outputs, *pictures])
    if removed:
        print(f"removed {len(removed)} file{'s' * (len(removed) != 1)} of the earlier eval in {out}")


def _written_by_eval(name: str) -> bool:
    """What eval writes in its folder: its three files and the pictures of vis/."""
    if name in (RESULTS_FILE, METRICS_FILE, PR_PLOT_FILE, CONFUSION_JSON, CONFUSION_PLOT):
        return True
    folder, _, picture = name.partition("/")
    return folder == VIS_FOLDER and "/" not in picture and picture.endswith(".png")


def _load_results(path: str) -> list[dict]:
    """A COCO results file's entries, unchecked but for being a list of objects."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path}: cannot read results ({type(error).__name__}: {error})") from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"{path}: a COCO results file is a list of objects")
    return results


def _check_results(path: str, results: list[dict], dataset: CocoDataset) -> None:
    """Raises ValueError naming the file and the first entry pycocotools would trip over."""
    sizes = {record.image_id: (record.height, record.width) for record in dataset.records}
    for index, entry in enumerate(results):
        problem = _result_problem(entry, sizes, len(dataset.keypoint_names))
        if problem:
            raise ValueError(f"{path}: entry {index} {problem}")


def _result_problem(entry: dict, sizes: dict[int, tuple[int, int]], num_keypoints: int = 0) -> str | None:
    """What pycocotools would trip over in one results entry ("has no 'score'"), or None.

    num_keypoints: K of the ground truth's keypoints; an entry's `keypoints` must be 3K numbers."""
    for field in ("image_id", "category_id", "score", "bbox"):
        if field not in entry:
            return f"has no {field!r}"
    image_id, score, bbox = entry["image_id"], entry["score"], entry["bbox"]
    if not _is_int(image_id) or image_id not in sizes:
        return f"has image_id {_short(image_id)}, not an image of the ground truth"
    if not _is_int(entry["category_id"]):
        return f"has category_id {_short(entry['category_id'])}, not an integer"
    if not _is_finite(score):
        return f"has score {_short(score)}, not a finite number"
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_finite(v) for v in bbox):
        return f"has bbox {_short(bbox)}, not [x, y, width, height]"
    if "segmentation" in entry:
        if not isinstance(entry["segmentation"], dict):
            return "has a polygon segmentation (pycocotools scores RLE only: predict without --polygons)"
        problem = rle_problem(entry["segmentation"], *sizes[image_id])
        if problem:
            return f"has an unusable segmentation ({problem})"
    if "keypoints" in entry:
        points = entry["keypoints"]
        if not isinstance(points, list) or len(points) != 3 * num_keypoints:
            wanted = f"[x1, y1, v1, ...] of the split's {num_keypoints} keypoints"
            return f"has keypoints {_short(points)}, not {wanted}"
        if not all(_is_finite(v) for v in points):
            return f"has keypoints {_short(points)} that are not all finite numbers"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def vis_paths(dataset: CocoDataset, count: int, out: Path) -> list[Path]:
    """Where `write_side_by_side` draws the first `count` images: out/<image file stem>.png
    (-2, -3, ... for a repeated stem, as predict's overlays)."""
    return [out / name for name in picture_names([r.file_name for r in dataset.records[:count]])]


def write_side_by_side(
    model, dataset: CocoDataset, count: int, out: Path, precision: str = "fp32"
) -> list[Path]:
    """Ground truth on the left, predictions on the right, for the first `count` images;
    returns the pictures written (an unreadable image skipped with skip_bad_images has none)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, path in enumerate(vis_paths(dataset, count, out)):
        sample = dataset[index]
        if sample is None:
            continue
        image, target = sample
        pixels = display_image(image)
        skeleton = model.config.keypoint_head.skeleton or dataset.keypoint_skeleton
        truth = draw_instances(
            pixels,
            target["boxes"],
            target["labels"],
            np.ones(len(target["labels"])),
            target["masks"] > 0,
            model.class_names,
            keypoints=target.get("keypoints"),
            skeleton=skeleton,
        )
        detections = model.predict([image], precision, normalized=True)[0]
        predicted = draw_instances(
            pixels,
            detections["boxes"],
            detections["labels"],
            detections["scores"],
            detections.get("masks"),
            model.class_names,
            score_threshold=0.5,
            keypoints=detections.get("keypoints"),
            keypoint_scores=detections.get("keypoint_scores"),
            skeleton=skeleton,
        )
        canvas = Image.new("RGB", (truth.width * 2 + 8, truth.height), (255, 255, 255))
        canvas.paste(truth, (0, 0))
        canvas.paste(predicted, (truth.width + 8, 0))
        with atomic_output(path) as temporary:  # never a half-written picture
            canvas.save(temporary, format="PNG")
        written.append(path)
    return written
