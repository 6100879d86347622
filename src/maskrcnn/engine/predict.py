"""The `predict` command: run a model over image files, write overlays and COCO results JSON.

Outputs in the output directory:
  <stem>.png         each image with its detections drawn
  predictions.json   COCO results entries (plus "file_name") for all images
  images.json        [{"id", "file_name", "height", "width"}] of the images that were read
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from maskrcnn.data.images import load_image
from maskrcnn.engine.evaluation import label_to_category
from maskrcnn.engine.results import detections_to_coco, write_json_atomic
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.visualize import draw_instances

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"

EXIT_OK, EXIT_IMAGE_ERRORS, EXIT_FATAL = 0, 1, 2


@dataclass
class PredictionRun:
    """What `predict_to_directory` produced: COCO `images` and results, and per-file errors."""

    images: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)


def predict_command(
    inputs: list[str],
    weights: str,
    out_dir: str,
    score_threshold: float = 0.5,
    device: str = "auto",
    polygons: bool = False,
    precision: str = "fp32",
) -> int:
    """Run `maskrcnn predict`; returns the exit code (0 ok, 1 some images failed, 2 nothing ran).

    Problems that stop the whole run (bad weights, no images, unusable output directory)
    print one `error: ...` line instead of a traceback.
    """
    try:
        images = find_images(inputs)
        if not images:
            raise ValueError(f"no images found in {', '.join(inputs)} (extensions: {_extensions()})")
        overlays = overlay_paths(images, Path(out_dir))
        model = load_model(weights, device=device)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FATAL
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        run = predict_to_directory(
            model, images, overlays, Path(out_dir), score_threshold, polygons, precision
        )
    except OSError as error:  # the output directory or its JSON files cannot be written
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FATAL
    count = len(run.results)
    print(f"{count} detection{'s' * (count != 1)} in {len(run.images)} of {len(images)} images -> {out_dir}")
    return EXIT_IMAGE_ERRORS if run.errors else EXIT_OK


def predict_to_directory(
    model: MaskRCNN,
    images: list[Path],
    overlays: list[Path],
    out_dir: Path,
    score_threshold: float,
    polygons: bool = False,
    precision: str = "fp32",
) -> PredictionRun:
    """Detect in each image, write its overlay, then both JSON files; report as it goes.

    An image that cannot be read (or processed) is reported as `error: <path>: <problem>`
    on stderr and skipped. Image ids are 1-based positions in `images`, so a file keeps its
    id whether or not others fail. A progress bar is shown for more than one image.
    """
    run = PredictionRun()
    progress = tqdm(images, desc="predict", unit="image", disable=len(images) <= 1)
    for image_id, (path, overlay) in enumerate(zip(progress, overlays), start=1):
        try:
            image = load_image(path)  # (3, H, W) float in [0, 1]
            detections = model.predict(image, precision)[0]
            kept = _above(detections, score_threshold)
            _save_overlay(image, kept, model.class_names, overlay)
        except (ValueError, OSError, torch.cuda.OutOfMemoryError) as error:
            run.errors.append((path, _problem(error, path)))
            tqdm.write(f"error: {path}: {_problem(error, path)}", file=sys.stderr)
            continue
        height, width = image.shape[-2:]
        run.images.append({"id": image_id, "file_name": str(path), "height": height, "width": width})
        entries = detections_to_coco(image_id, kept, category_ids=label_to_category(model), polygons=polygons)
        for entry in entries:
            entry["file_name"] = str(path)
        run.results.extend(entries)
        tqdm.write(f"{path}: {len(entries)} detection{'s' * (len(entries) != 1)}")
    progress.close()
    write_json_atomic(run.results, out_dir / PREDICTIONS_FILE)
    write_json_atomic(run.images, out_dir / IMAGES_FILE, indent=1)
    return run


def find_images(inputs: list[str]) -> list[Path]:
    """Files as given, and the image files directly inside each directory, sorted by name.

    Files named explicitly are kept whatever their extension (and even if missing, so the
    run reports them); only directory listings are filtered by IMAGE_EXTENSIONS.
    """
    images = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            images.extend(
                sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            )
        else:
            images.append(path)
    return images


def overlay_paths(images: list[Path], out_dir: Path) -> list[Path]:
    """out_dir/<stem>.png per image; repeated stems get -2, -3, ... so no overlay overwrites another.

    Raises ValueError if an overlay would overwrite one of the input images.
    """
    inputs = {_identity(p) for p in images}
    used, paths = set(), []
    for image in images:
        name, n = f"{image.stem}.png", 1
        while name.lower() in used:
            n += 1
            name = f"{image.stem}-{n}.png"
        used.add(name.lower())
        path = out_dir / name
        if _identity(path) in inputs:
            raise ValueError(
                f"{path}: writing the overlay would overwrite an input image; choose another --out"
            )
        paths.append(path)
    return paths


def _above(detections: dict, score_threshold: float) -> dict:
    keep = detections["scores"] >= score_threshold
    return {key: value[keep].cpu() for key, value in detections.items()}


def _save_overlay(image, detections: dict, class_names, path: Path) -> None:
    pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    overlay = draw_instances(
        pixels,
        detections["boxes"],
        detections["labels"],
        detections["scores"],
        detections.get("masks"),
        class_names,
    )
    overlay.save(path)


def _problem(error: Exception, path: Path) -> str:
    """The error's message without a leading "<path>: ", which the caller prints itself."""
    message = str(error)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _identity(path: Path) -> str:
    return str(path.resolve()).lower() if sys.platform in ("win32", "darwin") else str(path.resolve())


def _extensions() -> str:
    return " ".join(IMAGE_EXTENSIONS)
