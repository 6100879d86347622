"""The `predict` command: run a model over image files, write overlays and COCO results JSON.

Outputs in the output directory:
  <stem>.png         each image with its detections drawn (a keypoint model's keypoints too)
  predictions.json   COCO results entries (plus "file_name"; a keypoint model's entries also
                     "keypoints" and "keypoint_scores") for all images
  images.json        [{"id", "file_name", "height", "width"}] of the images that were read
  predict_files.json the files this run wrote (engine/manifest.py): a later run into the same
                     folder removes those it does not write again, so the folder never holds an
                     overlay of an image that is not among its inputs

Under torchrun (`torchrun --nproc_per_node N -m maskrcnn predict ...`) each process takes every
N-th image from its rank and writes those overlays; rank 0 merges the JSON files, which are
the same as one process writes (an image's id is its position among all the inputs).
"""

import itertools
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from maskrcnn.choices import IMAGE_EXTENSIONS, PREDICT_SCORE_THRESHOLD
from maskrcnn.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image, to_image_tensor
from maskrcnn.engine import distributed
from maskrcnn.engine.progress import item_progress
from maskrcnn.engine.stop import Interrupted
from maskrcnn.errors import OptionError, user_errors
from maskrcnn.evaluation.coco import label_to_category
from maskrcnn.evaluation.results import detections_to_coco, write_json_atomic
from maskrcnn.files import atomic_output, picture_names
from maskrcnn.inference.manifest import OutputManifest
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.visualize import display_image, draw_instances

PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"

EXIT_OK, EXIT_IMAGE_ERRORS = 0, 1


@dataclass(frozen=True)
class Tiling:
    """Tiled prediction's settings: tile None = whole images."""

    tile: int | None = None
    overlap: int | None = None  # None: 128 pixels, or half a tile if less


@dataclass
class PredictionRun:
    """What `predict_to_directory` produced: per image done, its COCO `images` entry, its
    results and its overlay (added as one item, so that a stop signal never leaves an image
    half recorded), and per-file errors."""

    done: list[tuple[dict, list[dict], Path]] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    # a stop signal (SIGINT, SIGTERM) that ended the run before its last image
    stopped: BaseException | None = None

    @property
    def images(self) -> list[dict]:
        return [image for image, _, _ in self.done]

    @property
    def results(self) -> list[dict]:
        return [entry for _, entries, _ in self.done for entry in entries]

    @property
    def overlays(self) -> list[Path]:
        """The overlay files written."""
        return [overlay for _, _, overlay in self.done]


def predict_command(
    inputs: list[str],
    weights: str,
    out_dir: str,
    score_threshold: float = PREDICT_SCORE_THRESHOLD,
    device: str = "auto",
    polygons: bool = False,
    precision: str = "fp32",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    tile: int | None = None,
    tile_overlap: int | None = None,
    max_detections: int | None = None,
    report_error: "Callable[[Path, str], None] | None" = None,
) -> int:
    """Run `maskrcnn predict`; returns the exit code (0 ok, 1 some images failed).
    max_detections: the model's `roi_heads.detections_per_image` for this run (None: its own).
    report_error: told (path, problem) of each image that cannot be read or processed, as the
    run goes on (the command line prints it as an `error:` line).

    Problems that stop the whole run (bad weights, no images, unusable output directory) raise
    OptionError, one line (`cli.main` prints it; exit code 2). Under torchrun every process runs
    this and returns the same code; rank 0 prints the summary.
    """
    try:
        context = distributed.setup(device)
    except (ValueError, RuntimeError) as error:  # --device cuda without CUDA
        raise OptionError(f"--device {device}: {error}") from None
    try:
        with user_errors(CheckpointError, ValueError, OSError):
            tiling = Tiling(tile, tile_overlap)
            return _predict(
                context,
                inputs,
                (weights, max_detections),
                Path(out_dir),
                score_threshold,
                polygons,
                precision,
                max_image_pixels,
                tiling,
                report_error,
            )
    finally:
        distributed.teardown(context)


def _predict(
    context: distributed.Context,
    inputs: list[str],
    weights: tuple[str, int | None],
    out_dir: Path,
    score_threshold: float,
    polygons: bool,
    precision: str,
    max_image_pixels: int,
    tiling: "Tiling",
    report_error: "Callable[[Path, str], None] | None",
) -> int:
    model, images, overlays, manifest = _prepare(context, inputs, weights, out_dir)
    # Each process takes every world_size-th image; ids are positions among all of them.
    share = slice(context.rank, None, context.world_size)
    ids = list(range(1, len(images) + 1))
    run, failure = PredictionRun(), None
    try:
        run = predict_to_directory(
            model,
            images[share],
            overlays[share],
            out_dir,
            score_threshold,
            polygons,
            precision,
            max_image_pixels,
            image_ids=ids[share],
            progress=context.is_main,
            tiling=tiling,
            report_error=report_error,
        )
    except OSError as error:  # an overlay cannot be written: the output directory is unusable
        failure = error
    distributed.raise_if_any_failed(failure, context)
    failed = sum(distributed.all_gather(len(run.errors), context))
    runs = distributed.gather_to_main(run, context)
    if context.is_main:
        run = merge_runs(runs)
        write_run(run, out_dir)
        removed = manifest.finish([*run.overlays, out_dir / PREDICTIONS_FILE, out_dir / IMAGES_FILE])
        if removed:
            print(f"removed {len(removed)} file{'s' * (len(removed) != 1)} of the earlier run in {out_dir}")
        count, read = len(run.results), len(run.images)
        print(f"{count} detection{'s' * (count != 1)} in {read} of {len(images)} images -> {out_dir}")
    if run.stopped is not None:
        # The JSON files and the overlays hold the images done before the signal, and only those.
        done = len(run.done) if context.is_main else "some"
        stop = run.stopped if isinstance(run.stopped, Interrupted) else Interrupted(signal.SIGINT)
        raise Interrupted(
            stop.signum,
            f"{stop}: {PREDICTIONS_FILE} and {IMAGES_FILE} in {out_dir} hold the {done} of "
            f"{len(images)} images done before it, with their overlays",
        )
    return EXIT_IMAGE_ERRORS if failed else EXIT_OK


def _prepare(context: distributed.Context, inputs: list[str], weights: tuple[str, int | None], out_dir: Path):
    """(model, images, overlay paths, the output manifest (rank 0; else None)) on every
    process; if any process cannot have them, all raise, so that none waits for the others later.
    weights: the file, and the detections per image it keeps (None: the file's)."""
    weights, max_detections = weights
    model, images, overlays, manifest, failure = None, [], [], None, None
    try:
        images, skipped = find_images(inputs)
        if skipped and context.is_main:
            print(_skipped_line(skipped))
        if not images:
            raise ValueError(f"no images found in {', '.join(inputs)} (extensions: {_extensions()})")
        overlays = overlay_paths(images, out_dir)
        model = load_model(weights, device=context.device)
        if max_detections is not None:
            model.set_detections_per_image(max_detections)
        out_dir.mkdir(parents=True, exist_ok=True)
        if context.is_main:  # before any process writes an overlay
            manifest = OutputManifest(out_dir, "predict", _written_by_predict, keep=images)
            manifest.begin([*overlays, out_dir / PREDICTIONS_FILE, out_dir / IMAGES_FILE])
    except (CheckpointError, ValueError, OSError) as error:
        failure = error
    distributed.raise_if_any_failed(failure, context)
    return model, images, overlays, manifest


def _written_by_predict(name: str) -> bool:
    """What predict writes in its folder: overlays and its two JSON files, never in a subfolder."""
    return "/" not in name and (name.endswith(".png") or name in (PREDICTIONS_FILE, IMAGES_FILE))


def merge_runs(runs: list[PredictionRun]) -> PredictionRun:
    """The runs of several processes as one: images and results in image id order."""
    done = sorted(itertools.chain.from_iterable(r.done for r in runs), key=lambda item: item[0]["id"])
    errors = list(itertools.chain.from_iterable(r.errors for r in runs))
    stopped = next((r.stopped for r in runs if r.stopped is not None), None)
    return PredictionRun(done, errors, stopped)


def write_run(run: PredictionRun, out_dir: Path) -> None:
    """predictions.json and images.json in `out_dir`."""
    write_json_atomic(run.results, out_dir / PREDICTIONS_FILE)
    write_json_atomic(run.images, out_dir / IMAGES_FILE, indent=1)


def predict_to_directory(
    model: MaskRCNN,
    images: list[Path],
    overlays: list[Path],
    out_dir: Path,
    score_threshold: float,
    polygons: bool = False,
    precision: str = "fp32",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    image_ids: Sequence[int] | None = None,
    progress: bool = True,
    tiling: "Tiling | None" = None,
    report_error: "Callable[[Path, str], None] | None" = None,
) -> PredictionRun:
    """Detect in each image and write its overlay, reporting as it goes; `write_run` then
    writes the JSON files.

    An image that cannot be read (or processed) is skipped, kept in the run's `errors` and
    passed to `report_error` (path, problem) when given. Image ids are `image_ids`, by
    default the 1-based positions in `images`, so a file keeps its id whether or not others
    fail. A progress bar is shown for more than one image (unless `progress` is False).
    Each file is read and normalized as the training data was (the model's `config.input`);
    files whose header claims more than `max_image_pixels` pixels are refused unread.
    tiling: with a tile size, images larger than a tile are detected tile by tile
    (`MaskRCNN.predict(tile=...)`).
    """
    tiling = tiling or Tiling()
    run = PredictionRun()
    ids = range(1, len(images) + 1) if image_ids is None else image_ids
    # Off a terminal the line per image below is the progress.
    progress = item_progress(images, "predict", "image", enabled=len(images) > 1 and progress, lines=0)
    try:
        for image_id, path, overlay in zip(ids, progress, overlays):
            try:
                image, entries = _predict_one(
                    model, path, overlay, score_threshold, polygons, precision, max_image_pixels, tiling
                )
            except (ValueError, OSError, torch.cuda.OutOfMemoryError) as error:
                run.errors.append((path, _problem(error, path)))
                if report_error is not None:
                    report_error(*run.errors[-1])
                continue
            height, width = image.shape[-2:]
            entry = {"id": image_id, "file_name": str(path), "height": height, "width": width}
            for result in entries:
                result.update(image_id=image_id, file_name=str(path))
            run.done.append((entry, entries, overlay))
            tqdm.write(f"{path}: {len(entries)} detection{'s' * (len(entries) != 1)}")
    except (KeyboardInterrupt, Interrupted) as stop:  # keep what is done: the caller writes it
        run.stopped = stop
    return run


def _predict_one(model, path, overlay, score_threshold, polygons, precision, max_image_pixels, tiling):
    """One file: its image (C, H, W) in [0, 1] and its COCO results entries (image id 0, set
    by the caller); its overlay is written."""
    pixels = load_image(path, max_image_pixels)
    image = to_image_tensor(pixels, model.config.input, str(path))  # (C, H, W) in [0, 1]
    (detections,) = model.predict(
        image,
        precision,
        normalized=True,
        score_threshold=score_threshold,
        tile=tiling.tile,
        tile_overlap=tiling.overlap,
    )
    kept = {key: value.cpu() for key, value in detections.items()}
    _save_overlay(image, kept, model.class_names, overlay, model.config.keypoint_head.skeleton)
    return image, detections_to_coco(0, kept, category_ids=label_to_category(model), polygons=polygons)


def find_images(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """The images to run on, and what the directories held besides them.

    Files named explicitly are kept whatever their name (and even if missing, so the run
    reports them; the command line refuses a missing one before it starts). Inside a
    directory (not searched recursively), sorted by name, the files with an IMAGE_EXTENSIONS
    suffix are images; hidden files (a leading dot: `.DS_Store`, or the `._photo.jpg` that
    macOS writes beside each file on a foreign drive, which is no JPEG), other files and
    subdirectories are skipped.
    """
    images, skipped = [], []
    for name in inputs:
        path = Path(name)
        if not path.is_dir():
            images.append(path)
            continue
        for entry in sorted(path.iterdir()):
            visible = not entry.name.startswith(".")
            if visible and entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(entry)
            else:
                skipped.append(entry)
    return images, skipped


def _skipped_line(skipped: list[Path], shown: int = 20) -> str:
    names = [f"{p}/" if p.is_dir() else str(p) for p in skipped[:shown]]
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    count = f"{len(skipped)} {'entries' if len(skipped) > 1 else 'entry'}"
    return f"skipped {count} (not images, or hidden): {', '.join(names)}{more}"


def overlay_paths(images: list[Path], out_dir: Path) -> list[Path]:
    """out_dir/<stem>.png per image; repeated stems get -2, -3, ... so no overlay overwrites another.

    Raises ValueError if an overlay would overwrite one of the input images.
    """
    inputs = {_identity(p) for p in images}
    paths = []
    for name in picture_names(images):
        path = out_dir / name
        if _identity(path) in inputs:
            raise ValueError(
                f"{path}: writing the overlay would overwrite an input image; choose another --out"
            )
        paths.append(path)
    return paths


def _save_overlay(image, detections: dict, class_names, path: Path, skeleton=()) -> None:
    overlay = draw_instances(
        display_image(image),
        detections["boxes"],
        detections["labels"],
        detections["scores"],
        detections.get("masks"),
        class_names,
        keypoints=detections.get("keypoints"),
        keypoint_scores=detections.get("keypoint_scores"),
        skeleton=skeleton,
    )
    with atomic_output(path) as temporary:  # never a half-written picture
        overlay.save(temporary, format="PNG")


def _problem(error: Exception, path: Path) -> str:
    """The error's message without a leading "<path>: ", which the caller prints itself."""
    message = str(error)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _identity(path: Path) -> str:
    return str(path.resolve()).lower() if sys.platform in ("win32", "darwin") else str(path.resolve())


def _extensions() -> str:
    return " ".join(IMAGE_EXTENSIONS)
