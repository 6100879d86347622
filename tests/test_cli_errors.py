"""Every subcommand, every option, given a wrong value: exit code 2, one `error:` line naming the
option as typed, nothing written, no traceback, and no waiting.

Two shapes of output, each asserted exactly:
- a value the command cannot use (wrong type, out of range, a missing path, a malformed file):
  stderr is exactly one line, `error: <option> <value>: <problem>` (or `error: <file>: <problem>`
  for a weights file, config file or annotation file whose contents are wrong);
- a command line argparse cannot read (a misspelt or unknown option, a missing required one, a
  flag given a value): the subcommand's usage (its first line `usage: maskrcnn <command> ...`,
  then indented continuation lines) and then exactly one `error: ...` line.
"""

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import build_parser, main
from maskrcnn.data.shapes import make_shapes
from maskrcnn.testing import tiny_model_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes.yaml"
SHAPES_CLASSES = ("__background__", "circle", "square", "triangle")
MPS = torch.backends.mps.is_available()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Paths the cases name: a tiny checkpoint, a shapes dataset, and files of the wrong kind."""
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", maskrcnn.build_model(tiny_model_config(SHAPES_CLASSES, (1, 2, 3))))
    shapes = make_shapes(root / "shapes", 2, 1)
    (root / "notes.txt").write_text("not an image, not JSON, not weights\n")
    (root / "bad.yaml").write_text("model: [unclosed\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "results_object.json").write_text('{"not": "a list"}')
    return {
        "root": str(root),
        "config": str(CONFIG),
        "tiny": str(root / "tiny.pt"),
        "notes": str(root / "notes.txt"),
        "bad_yaml": str(root / "bad.yaml"),
        "list_yaml": str(root / "list.yaml"),
        "results_object": str(root / "results_object.json"),
        "missing": str(root / "missing"),
        "image": str(next(shapes["val_images"].glob("*.png"))),
        "train_json": str(shapes["train_annotations"]),
        "train_images": str(shapes["train_images"]),
        "val_json": str(shapes["val_annotations"]),
        "val_images": str(shapes["val_images"]),
    }


@dataclass
class Case:
    command: str
    option: str  # the option (or positional metavar, or KEY=VALUE) the case is about
    args: str  # added to the command's valid BASE line (an option given twice: the last counts)
    expected: str  # a part of the error line; {placeholders} as in `files`, and {out}
    usage: bool = False  # an argparse-level error: usage, then the error line
    whole: bool = False  # `args` is the whole command line, not an addition to BASE

    @property
    def line(self) -> str:
        return self.args if self.whole else f"{BASE[self.command]} {self.args}"


BASE = {
    "predict": "predict {image} --weights {tiny} --out {out}",
    "train": "train {config} --train-json {train_json} --train-images {train_images} --out {out}",
    "eval": "eval {config} --weights {tiny} --json {val_json} --images {val_images} --out {out} --device cpu",
    "export": "export {out}/model.onnx --weights {tiny}",
    "make-shapes": "make-shapes {out}",
    "configs": "configs",
    "ablate": "ablate 2c --rows pool,align --out {out}/ablation --data {out}/shapes --max-iter 2",
    "serve": "serve --weights {tiny} --port 0",
    "convert": "convert masks {train_images} {train_images} --out {out}/c.json",
}
NUMBER = "expected a number from 0 to 1"
DEVICES = "expected auto, cpu, cuda, cuda:N or mps"
PRECISIONS = "expected one of fp32, bf16, fp16, auto"
IGNORED = "ignored explicit argument"
CLI = "(from the command line)"
SHAPES_COUNT = "expected a whole number from 1 to 100000"
HOST = "expected an IP address or a host name"


def P(*args, **kwargs):
    return Case("predict", *args, **kwargs)


def T(*args, **kwargs):
    return Case("train", *args, **kwargs)


def E(*args, **kwargs):
    return Case("eval", *args, **kwargs)


def X(*args, **kwargs):
    return Case("export", *args, **kwargs)


def S(*args, **kwargs):
    return Case("make-shapes", *args, **kwargs)


def C(*args, **kwargs):
    return Case("configs", *args, **kwargs)


def A(*args, **kwargs):
    return Case("ablate", *args, **kwargs)


def V(*args, **kwargs):
    return Case("serve", *args, **kwargs)


def K(*args, **kwargs):
    return Case("convert", *args, **kwargs)


BEST = "expected one of auto, bbox_AP, bbox_AP50"
DETECTIONS = "expected a whole number from 1 to 100000"


CASES = [
    P(
        "IMAGE_OR_DIR",
        "predict {missing}.png --weights {tiny} --out {out}",
        "IMAGE_OR_DIR {missing}.png: no such file",
        whole=True,
    ),
    P(
        "IMAGE_OR_DIR",
        "predict {image} '' --weights {tiny} --out {out}",
        "IMAGE_OR_DIR '': no such file",
        whole=True,
    ),
    P("--weights", "--weights {missing}.pt", "{missing}.pt: weights file not found"),
    P("--weights", "--weights {root}", "{root}: is a directory, not a weights file"),
    P("--weights", "--weights {notes}", "{notes}: "),
    P("--weights", "--weights ''", "--weights '': expected a weights file"),
    P("--out", "--out {notes}", "--out {notes}: is a file; expected a folder"),
    P("--out", "--out {notes}/sub", "--out {notes}/sub: {notes} is a file, so no folder can be made in it"),
    P("--out", "--out ''", "--out '': expected a folder path"),
    P("--score-threshold", "--score-threshold abc", f"--score-threshold abc: {NUMBER}"),
    P("--score-threshold", "--score-threshold 2", f"--score-threshold 2: {NUMBER}"),
    P("--score-threshold", "--score-threshold -0.1", f"--score-threshold -0.1: {NUMBER}"),
    P("--score-threshold", "--score-threshold nan", f"--score-threshold nan: {NUMBER}"),
    P("--score-threshold", "--score-threshold 0.3.4", f"--score-threshold 0.3.4: {NUMBER}"),
    P("--device", "--device gpu", f"--device gpu: {DEVICES}"),
    P("--device", "--device cuda:x", f"--device cuda:x: {DEVICES}"),
    P("--device", "--device cuda:99", "--device cuda:99: "),
    P("--precision", "--precision fp8", f"--precision fp8: {PRECISIONS}"),
    P("--precision", "--precision FP32", f"--precision FP32: {PRECISIONS}"),
    P("--strict", "--strict=yes", f"argument --strict: {IGNORED} 'yes'", usage=True),
    P("--polygons", "--polygons=1", f"argument --polygons: {IGNORED} '1'", usage=True),
    P("--max-image-pixels", "--max-image-pixels -1", "--max-image-pixels -1: expected a whole number >= 0"),
    P("--max-image-pixels", "--max-image-pixels 1.5", "--max-image-pixels 1.5: expected a whole number"),
    P("--max-image-pixels", "--max-image-pixels many", "--max-image-pixels many: expected a whole number"),
    P("--max-detections", "--max-detections 0", f"--max-detections 0: {DETECTIONS}"),
    P("--max-detections", "--max-detections lots", f"--max-detections lots: {DETECTIONS}"),
    P("--tile", "--tile 32", "--tile 32: expected a whole number >= 64"),
    P("--tile", "--tile big", "--tile big: expected a whole number >= 64"),
    P("--tile-overlap", "--tile-overlap -5", "--tile-overlap -5: expected a whole number >= 0"),
    P("--tile-overlap", "--tile-overlap 16", "--tile-overlap 16: only with --tile"),
    P(
        "--tile-overlap",
        "--tile 256 --tile-overlap 200",
        "--tile-overlap 200: expected a whole number from 0 to half of --tile 256 (128)",
    ),
    P(
        "usage",
        "--score-treshold 0.3",
        "arguments: --score-treshold 0.3; did you mean --score-threshold?",
        usage=True,
    ),
    P(
        "usage",
        "predict {image} --out {out}",
        "the following arguments are required: --weights",
        usage=True,
        whole=True,
    ),
    T("CONFIG", "train {missing}.yaml --out {out}", "CONFIG {missing}.yaml: no such file", whole=True),
    T(
        "CONFIG",
        "train shapse --out {out}",
        "CONFIG shapse: no such file or built-in config; did you mean shapes?",
        whole=True,
    ),
    T("CONFIG", "train {root} --out {out}", "CONFIG {root}: is a folder, not a file", whole=True),
    T("CONFIG", "train {bad_yaml} --out {out}", "{bad_yaml}: invalid YAML", whole=True),
    T("CONFIG", "train {list_yaml} --out {out}", "{list_yaml}: the config must be a mapping", whole=True),
    T("KEY=VALUE", "solver.learning_rate=0.1", f"solver.learning_rate {CLI}: unknown config key"),
    T("KEY=VALUE", "solver.max_iter=abc", f"solver.max_iter {CLI}: expected int"),
    T("KEY=VALUE", "solver.base_lr=-1", f"solver.base_lr=-1.0 {CLI}: expected a number > 0"),
    T("KEY=VALUE", "data.min_sizes_train=[1,", f"data.min_sizes_train {CLI}: '[1,' is not a valid value"),
    T(
        "KEY=VALUE",
        "model.roi_heads.score_threshold=2",
        f"model.roi_heads.score_threshold=2.0 {CLI}: expected",
    ),
    T("KEY=VALUE", "device=gpu", f"device='gpu' {CLI}: {DEVICES}"),
    T("KEY=VALUE", "=5", "'=5' is not a key=value override"),
    T(
        "KEY=VALUE",
        "train {config} --out {out} data.train_json={missing}",
        f"data.train_json={{missing}} {CLI}: no such file",
        whole=True,
    ),
    T(
        "KEY=VALUE",
        "train {config} --out {out}",
        "data.train_json=data/shapes/annotations/instances_train.json (from {config}): no such file",
        whole=True,
    ),
    T("--train-json", "--train-json {missing}.json", "--train-json {missing}.json: no such file"),
    T("--train-json", "--train-json {root}", "--train-json {root}: is a folder, not a file"),
    T("--train-images", "--train-images {missing}", "--train-images {missing}: no such folder"),
    T("--train-images", "--train-images {notes}", "--train-images {notes}: is a file, not a folder"),
    T(
        "--val-json",
        "--val-json {missing}.json --val-images {val_images}",
        "--val-json {missing}.json: no such file",
    ),
    T(
        "--val-json",
        "--val-json {val_images} --val-images {val_images}",
        "--val-json {val_images}: is a folder",
    ),
    T(
        "--val-images",
        "--val-json {val_json} --val-images {missing}",
        "--val-images {missing}: no such folder",
    ),
    T("--val-images", "--val-json {val_json} --val-images {val_json}", "--val-images {val_json}: is a file"),
    T("--out", "--out {notes}", "--out {notes}: is a file; expected a folder"),
    T("--out", "--out {notes}/run", "--out {notes}/run: {notes} is a file"),
    T("--max-iter", "--max-iter 0", "--max-iter 0: expected a whole number >= 1"),
    T("--max-iter", "--max-iter ten", "--max-iter ten: expected a whole number >= 1"),
    T("--max-iter", "--max-iter 1.5", "--max-iter 1.5: expected a whole number >= 1"),
    T("--budget-minutes", "--budget-minutes 0", "--budget-minutes 0: expected a number from"),
    T("--budget-minutes", "--budget-minutes soon", "--budget-minutes soon: expected a number from"),
    T("--resume", "--resume --overwrite", "--resume continues the run in --out and --overwrite replaces it"),
    T("--resume", "--resume=1", f"argument --resume: {IGNORED} '1'", usage=True),
    T("--overwrite", "--overwrite=no", f"argument --overwrite: {IGNORED} 'no'", usage=True),
    T("--skip-bad-images", "--skip-bad-images=0", f"argument --skip-bad-images: {IGNORED} '0'", usage=True),
    T("--strict", "--strict=1", f"argument --strict: {IGNORED} '1'", usage=True),
    T(
        "usage",
        "--max-iters 5",
        "unrecognized arguments: --max-iters 5; did you mean --max-iter?",
        usage=True,
    ),
    E(
        "CONFIG",
        "eval {missing}.yaml --weights {tiny} --json {val_json}",
        "CONFIG {missing}.yaml: no such file",
        whole=True,
    ),
    E(
        "CONFIG",
        "eval {root}/shapes.yaml --weights {tiny} --json {val_json}",
        "CONFIG {root}/shapes.yaml: no such file; did you mean shapes?",
        whole=True,
    ),
    E("CONFIG", "eval {bad_yaml} --weights {tiny} --json {val_json}", "{bad_yaml}: invalid YAML", whole=True),
    E("KEY=VALUE", "data.max_image_pixels=-5", f"data.max_image_pixels=-5 {CLI}: expected an integer >= 0"),
    E("KEY=VALUE", "data.skip_bad_images=maybe", f"data.skip_bad_images {CLI}: expected bool"),
    E("KEY=VALUE", "data.val_jsn=x", "did you mean 'data.val_json'?"),
    E(
        "KEY=VALUE",
        "eval {config} --weights {tiny} --out {out}",
        "data.val_json=data/shapes/annotations/instances_val.json (from {config}): no such file",
        whole=True,
    ),
    E("--weights", "--weights {missing}.pt", "{missing}.pt: weights file not found"),
    E("--weights", "--weights {notes}", "{notes}: "),
    E(
        "--weights",
        "eval {config} --json {val_json} --out {out}",
        "give --weights FILE (or --results FILE",
        whole=True,
    ),
    E("--weights", "--results {val_json}", "--weights runs a model and --results scores saved detections"),
    E("--json", "--json {missing}.json", "--json {missing}.json: no such file"),
    E("--json", "--json {val_images}", "--json {val_images}: is a folder"),
    E("--json", "--json {notes}", "{notes}: "),
    E("--images", "--images {missing}", "--images {missing}: no such folder"),
    E("--images", "--images {notes}", "--images {notes}: is a file"),
    E("--out", "--out {notes}", "--out {notes}: is a file"),
    E("--out", "--out ''", "--out '': expected a folder"),
    E(
        "--results",
        "eval {config} --json {val_json} --results {missing}.json --out {out}",
        "--results {missing}.json: no such file",
        whole=True,
    ),
    E(
        "--results",
        "eval {config} --json {val_json} --results {results_object} --out {out}",
        "{results_object}: a COCO results file is a list",
        whole=True,
    ),
    E(
        "--results",
        "eval {config} --json {val_json} --results {notes} --out {out}",
        "{notes}: cannot read results",
        whole=True,
    ),
    E("--oks-sigmas", "--oks-sigmas 1,a", "--oks-sigmas 1,a: expected comma-separated numbers > 0"),
    E("--oks-sigmas", "--oks-sigmas 0.05,-1", "--oks-sigmas 0.05,-1: expected comma-separated numbers > 0"),
    E("--vis", "--vis -1", "--vis -1: expected a whole number from 0 to 10000"),
    E("--vis", "--vis 100000000", "--vis 100000000: expected a whole number from 0 to 10000"),
    E("--vis", "--vis all", "--vis all: expected a whole number from 0 to 10000"),
    E(
        "--vis",
        "eval {config} --json {val_json} --results {val_json} --vis 2 --out {out}",
        "--vis 2: draws a model's predictions; it needs --weights",
        whole=True,
    ),
    E("--device", "--device tpu", f"--device tpu: {DEVICES}"),
    E("--device", "--device cuda:-1", f"--device cuda:-1: {DEVICES}"),
    *([] if MPS else [E("--device", "--device mps", "--device mps: this PyTorch or machine has no MPS")]),
    E("--precision", "--precision half", f"--precision half: {PRECISIONS}"),
    E("--precision", "--precision ''", f"--precision '': {PRECISIONS}"),
    E("--strict", "--strict=on", f"argument --strict: {IGNORED} 'on'", usage=True),
    E("usage", "--vis-count 3", "unrecognized arguments: --vis-count 3; did you mean --vis?", usage=True),
    E("usage", "--vis", "argument --vis: expected one argument", usage=True),
    X(
        "OUT.onnx",
        "export {root} --weights {tiny}",
        "OUT.onnx {root}: is a folder; expected the file to write",
        whole=True,
    ),
    X(
        "OUT.onnx",
        "export {notes}/model.onnx --weights {tiny}",
        "OUT.onnx {notes}/model.onnx: {notes} is a file",
        whole=True,
    ),
    X("OUT.onnx", "export '' --weights {tiny}", "OUT.onnx '': expected a file path", whole=True),
    X("--weights", "--weights {missing}.pt", "{missing}.pt: weights file not found"),
    X("--weights", "--weights {notes}", "{notes}: "),
    X("usage", "--format onnx", "unrecognized arguments: --format onnx", usage=True),  # ONNX only
    X("--check-image", "--check-image {missing}.png", "--check-image {missing}.png: no such file"),
    X("--check-image", "--check-image {root}", "--check-image {root}: is a folder, not a file"),
    X("--check-image", "--check-image {notes}", "--check-image {notes}: cannot read image"),
    X("--check-image", "--check-image {image} --no-check", "--check-image names an image to compare on"),
    X("--no-check", "--no-check=true", f"argument --no-check: {IGNORED} 'true'", usage=True),
    X("--score-threshold", "--score-threshold 1.5", f"--score-threshold 1.5: {NUMBER}"),
    X("--score-threshold", "--score-threshold half", f"--score-threshold half: {NUMBER}"),
    X("--intensity", "--intensity log", "--intensity log: expected one of range, minmax, percentile"),
    X("--intensity", "--intensity auto", "--intensity auto: expected one of range, minmax, percentile"),
    X("usage", "--check-img {image}", "did you mean --check-image?", usage=True),
    S("OUT", "make-shapes {notes}", "OUT {notes}: is a file; expected a folder", whole=True),
    S("--keypoints", "--keypoints=yes", f"argument --keypoints: {IGNORED} 'yes'", usage=True),
    S("OUT", "make-shapes {notes}/shapes", "OUT {notes}/shapes: {notes} is a file", whole=True),
    S("--train", "--train 0", f"--train 0: {SHAPES_COUNT}"),
    S("--train", "--train 1000000000", f"--train 1000000000: {SHAPES_COUNT}"),
    S("--train", "--train lots", f"--train lots: {SHAPES_COUNT}"),
    S("--train", "--train 2.5", f"--train 2.5: {SHAPES_COUNT}"),
    S("--val", "--val -1", f"--val -1: {SHAPES_COUNT}"),
    S("--val", "--val x", f"--val x: {SHAPES_COUNT}"),
    S("--seed", "--seed -3", "--seed -3: expected a whole number >= 0"),
    S("--seed", "--seed abc", "--seed abc: expected a whole number >= 0"),
    S("usage", "--trian 5", "unrecognized arguments: --trian 5; did you mean --train?", usage=True),
    S("usage", "make-shapes", "the following arguments are required: OUT", usage=True, whole=True),
    C("NAME", "configs shapse", "NAME shapse: no such built-in config; did you mean shapes?", whole=True),
    C("NAME", "configs {config}", "no such built-in config (`maskrcnn configs` lists", whole=True),
    C("usage", "configs shapes extra", "unrecognized arguments: extra", usage=True, whole=True),
    A("TABLE", "ablate 2f --out {out}", "TABLE 2f: no such table; expected one of 2a (backbone", whole=True),
    A("TABLE", "ablate '' --out {out}", "TABLE '': no such table; expected one of 2a", whole=True),
    A("KEY=VALUE", "model.roi_heads.poolr=x", f"model.roi_heads.poolr {CLI}: unknown config key"),
    A("KEY=VALUE", "model.roi_heads.fc_dim=0", f"model.roi_heads.fc_dim=0 {CLI}: expected"),
    A("KEY=VALUE", "seed=3", "seed=3: ablate sets seed for each run; use --seeds"),
    A("KEY=VALUE", "solver.budget_minutes=3", "solver.budget_minutes=3: ablate sets solver.budget_minutes"),
    A("--rows", "--rows pool,algn", "--rows pool,algn: no row algn in table 2c; its rows are pool, warp_max"),
    A("--rows", "--rows ,", "--rows '': no rows named; its rows are pool"),
    A("--out", "--out {notes}", "--out {notes}: is a file; expected a folder"),
    A("--out", "--out {notes}/run", "--out {notes}/run: {notes} is a file"),
    A("--data", "--data {notes}", "--data {notes}: is a file; expected a folder"),
    A("--data", "--data {notes}/shapes", "--data {notes}/shapes: {notes} is a file"),
    A(
        "--config",
        "--config shapse",
        "--config shapse: no such file or built-in config; did you mean shapes?",
    ),
    A("--config", "--config {bad_yaml}", "{bad_yaml}: invalid YAML"),
    A("--budget-minutes", "--budget-minutes 0", "--budget-minutes 0: expected a number from"),
    A("--budget-minutes", "--budget-minutes 5", "--budget-minutes and --max-iter both set the length"),
    A("--max-iter", "--max-iter 0", "--max-iter 0: expected a whole number >= 1"),
    A("--max-iter", "--max-iter ten", "--max-iter ten: expected a whole number >= 1"),
    A("--seeds", "--seeds 0", "--seeds 0: expected a whole number from 1 to 100"),
    A("--seeds", "--seeds some", "--seeds some: expected a whole number from 1 to 100"),
    A("--device", "--device tpu", f"--device tpu: {DEVICES}"),
    A("--device", "--device cuda:x", f"--device cuda:x: {DEVICES}"),
    A("--overwrite", "--overwrite=yes", f"argument --overwrite: {IGNORED} 'yes'", usage=True),
    A("usage", "--row pool", "unrecognized arguments: --row pool; did you mean --rows?", usage=True),
    V("--weights", "--weights {missing}.pt", "{missing}.pt: weights file not found"),
    V("--weights", "--weights {root}", "{root}: is a directory, not a weights file"),
    V("--weights", "--weights {notes}", "{notes}: "),
    V("--weights", "--weights ''", "--weights '': expected a weights file"),
    V("--host", "--host ''", f"--host '': {HOST}"),
    V("--host", "--host 'local host'", f"--host 'local host': {HOST}"),
    V("--host", "--host http://127.0.0.1", f"--host http://127.0.0.1: {HOST}"),
    V("--host", "--host 127.0.0.256", f"--host 127.0.0.256: {HOST}"),
    V("--port", "--port 70000", "--port 70000: expected a whole number from 0 to 65535"),
    V("--port", "--port -1", "--port -1: expected a whole number from 0 to 65535"),
    V("--port", "--port http", "--port http: expected a whole number from 0 to 65535"),
    V("--max-batch", "--max-batch 0", "--max-batch 0: expected a whole number from 1 to 64"),
    V("--max-batch", "--max-batch 65", "--max-batch 65: expected a whole number from 1 to 64"),
    V("--max-batch", "--max-batch four", "--max-batch four: expected a whole number from 1 to 64"),
    V("--max-wait-ms", "--max-wait-ms -1", "--max-wait-ms -1: expected a number from 0 to 10000"),
    V("--max-wait-ms", "--max-wait-ms 1e9", "--max-wait-ms 1e9: expected a number from 0 to 10000"),
    V("--max-wait-ms", "--max-wait-ms soon", "--max-wait-ms soon: expected a number from 0 to 10000"),
    V("--device", "--device gpu", f"--device gpu: {DEVICES}"),
    V("--device", "--device cuda:x", f"--device cuda:x: {DEVICES}"),
    V("--device", "--device cuda:99", "--device cuda:99: "),
    V("--precision", "--precision fp8", f"--precision fp8: {PRECISIONS}"),
    V("--precision", "--precision FP32", f"--precision FP32: {PRECISIONS}"),
    V("--strict", "--strict=yes", f"argument --strict: {IGNORED} 'yes'", usage=True),
    V("--max-body-mb", "--max-body-mb 0", "--max-body-mb 0: expected a whole number from 1 to 100000"),
    V("--max-body-mb", "--max-body-mb 0.5", "--max-body-mb 0.5: expected a whole number from 1 to 100000"),
    V("--max-body-mb", "--max-body-mb lots", "--max-body-mb lots: expected a whole number from 1 to 100000"),
    V(
        "--shutdown-seconds",
        "--shutdown-seconds -1",
        "--shutdown-seconds -1: expected a number from 0 to 3600",
    ),
    V(
        "--shutdown-seconds",
        "--shutdown-seconds 1h",
        "--shutdown-seconds 1h: expected a number from 0 to 3600",
    ),
    V("--max-detections", "--max-detections 0", f"--max-detections 0: {DETECTIONS}"),
    V("--max-detections", "--max-detections 1e6", f"--max-detections 1e6: {DETECTIONS}"),
    V("--max-image-pixels", "--max-image-pixels -1", "--max-image-pixels -1: expected a whole number >= 0"),
    V("--max-image-pixels", "--max-image-pixels 5.5", "--max-image-pixels 5.5: expected a whole number >= 0"),
    V(
        "usage",
        "--max-batches 2",
        "unrecognized arguments: --max-batches 2; did you mean --max-batch?",
        usage=True,
    ),
    V("usage", "serve --port 0", "the following arguments are required: --weights", usage=True, whole=True),
    T("--eval-period", "--eval-period -1", "--eval-period -1: expected auto or a whole number >= 0"),
    T("--eval-period", "--eval-period often", "--eval-period often: expected auto or a whole number >= 0"),
    T("--patience", "--patience -1", "--patience -1: expected a whole number >= 0"),
    T("--patience", "--patience 2", "solver.patience=2 (from the command line) contradicts data.val_json"),
    T("--best-metric", "--best-metric mask_ap", f"--best-metric mask_ap: {BEST}"),
    T("--best-metric", "--best-metric AP", f"--best-metric AP: {BEST}"),
    T(
        "--best-metric",
        "--best-metric segm_AP model.masks=false",
        "solver.best_metric='segm_AP' (from the command line) contradicts model.masks=False",
    ),
    E("--metric", "--metric f1", "--metric f1: expected one of coco, accuracy"),
    E("--metric", "--metric COCO", "--metric COCO: expected one of coco, accuracy"),
    E("--match-score", "--match-score 2", "--match-score 2: expected a number from 0 to 1"),
    E("--match-score", "--match-score high", "--match-score high: expected a number from 0 to 1"),
    E("--match-iou", "--match-iou 0", "--match-iou 0: expected a number from 0.01 to 1"),
    E("--match-iou", "--match-iou 1.5", "--match-iou 1.5: expected a number from 0.01 to 1"),
    K(
        "FORMAT",
        "convert coco {train_json} --out {out}/c.json",
        "FORMAT coco: expected one of masks, yolo, labelme",
        whole=True,
    ),
    K(
        "FORMAT",
        "convert yolo {train_images} {train_images} --out {out}/c.json",
        "convert yolo takes DATA.yaml, got 2 sources",
        whole=True,
    ),
    K(
        "SOURCE",
        "convert masks {missing} {train_images} --out {out}/c.json",
        "IMAGES_DIR {missing}: no such folder",
        whole=True,
    ),
    K(
        "SOURCE",
        "convert yolo {missing}.yaml --out {out}/c.json",
        "DATA.yaml {missing}.yaml: no such file",
        whole=True,
    ),
    K("SOURCE", "convert labelme {notes} --out {out}/c.json", "DIR {notes}: ", whole=True),
    K(
        "--out",
        "--out {notes}/c.json",
        "--out {notes}/c.json: {notes} is a file, so no folder can be made in it",
    ),
    K("--out", "--out ''", "--out '': expected a file path"),
    K("--out", "--out {root}", "--out {root}: is a folder; expected the file to write"),
    K("--val-fraction", "--val-fraction 0.95", "--val-fraction 0.95: expected a number from 0 to 0.9"),
    K("--val-fraction", "--val-fraction some", "--val-fraction some: expected a number from 0 to 0.9"),
    K("--seed", "--seed -1", "--seed -1: expected a whole number >= 0"),
    K("--seed", "--seed x", "--seed x: expected a whole number >= 0"),
    K(
        "--class-name",
        "--class-name cell --classes {notes}",
        "--class-name names the one class and --classes",
    ),
    K(
        "--class-name",
        "convert labelme {train_images} --out {out}/c.json --class-name cell",
        "--class-name: an option of convert masks, not of convert labelme",
        whole=True,
    ),
    K("--classes", "--classes {missing}.csv", "--classes {missing}.csv: no such file"),
    K(
        "--classes",
        "convert labelme {train_images} --out {out}/c.json --classes {notes}",
        "--classes: an option of convert masks, not of convert labelme",
        whole=True,
    ),
    K("--split", "--split val", "--split: an option of convert yolo, not of convert masks"),
    K(
        "--split",
        "convert labelme {train_images} --out {out}/c.json --split train",
        "--split: an option of convert yolo, not of convert labelme",
        whole=True,
    ),
    K(
        "--require-masks",
        "--require-masks",
        "--require-masks: an option of convert yolo, not of convert masks",
    ),
    K("usage", "--val-fraktion 0.2", "did you mean --val-fraction?", usage=True),
]


def _fill(text: str, files: dict[str, str], out: Path) -> str:
    return text.format(**{key: shlex.quote(value) for key, value in files.items()}, out=shlex.quote(str(out)))


def _assert_one_error(stderr: str, case: Case, expected: str) -> None:
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert expected in errors[0], stderr
    if case.usage:
        assert lines[0].startswith(f"usage: maskrcnn {case.command} "), stderr
        assert all(line.startswith(" ") for line in lines[1:-1]), stderr
    else:
        assert len(lines) == 1, stderr


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}:{c.option}:{i}" for i, c in enumerate(CASES)])
def test_a_wrong_value_is_one_error_line_and_exit_2(case, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths of configs/shapes.yaml lead nowhere
    out = tmp_path / "out"
    argv = shlex.split(_fill(case.line, files, out))
    expected = _fill(case.expected, files, out)

    started = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - started

    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    _assert_one_error(captured.err, case, expected)
    assert not out.exists(), "a refused command wrote its output folder"
    # No value makes a command hang: a generous bound, not a speed. (That a wrong path is
    # answered at once, before torch is loaded, test_cli_startup.py checks without a clock.)
    assert elapsed < 300


def test_every_option_of_every_subcommand_has_cases():
    parser = build_parser()
    for command, subparser in parser.subcommand_parsers.items():
        for action in subparser._actions:
            if action.dest == "help":
                continue
            name = action.option_strings[0] if action.option_strings else action.metavar
            cases = [c for c in CASES if c.command == command and c.option == name]
            flag = action.nargs == 0
            assert len(cases) >= (1 if flag else 2), f"maskrcnn {command} {name}: {len(cases)} error cases"


def test_through_a_real_process_no_traceback_reaches_the_terminal(files, tmp_path):
    out = tmp_path / "out"
    lines = {
        "usage": _fill(BASE["predict"] + " --score-treshold 0.3", files, out),
        "path": _fill(
            "train {config} --train-json {train_json} --train-images {missing} --out {out}", files, out
        ),
    }
    # Both at once: most of each run is importing torch.
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "maskrcnn", *shlex.split(line)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for name, line in lines.items()
    }
    finished = {name: process.communicate(timeout=120) for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 2, finished[name]
        assert "Traceback" not in finished[name][1]
    usage_err = finished["usage"][1]
    assert usage_err.startswith("usage: maskrcnn predict ")
    assert usage_err.splitlines()[-1] == (
        "error: unrecognized arguments: --score-treshold 0.3; did you mean --score-threshold?"
    )
    assert finished["path"][1] == f"error: --train-images {files['missing']}: no such folder\n"
    assert not out.exists()
