"""`train --resume` with a last.pt (or model_final.pt) it cannot continue from: one line
`error: <file>: <problem>` and exit code 2, as for every weights file, never an "unexpected"
error; nothing of a hostile file is run, nothing of the run is changed."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from maskrcnn.cli.main import main
from maskrcnn.data.shapes import make_shapes

# A narrow model on 64x96 images, trained 2 steps: a run in a few seconds.
TINY = [
    "data.num_workers=0",
    "data.images_per_batch=2",
    "data.min_sizes_train=[64]",
    "data.max_size_train=96",
    "model.input.min_size=64",
    "model.input.max_size=96",
    "model.backbone.stage_channels=[32,64,128,256]",
    "model.backbone.stem_channels=16",
    "model.backbone.width_per_group=8",
    "model.backbone.fpn_channels=16",
    "model.roi_heads.fc_dim=64",
    "model.roi_heads.mask_conv_dim=16",
    "model.roi_heads.batch_size_per_image=16",
    "model.rpn.pre_nms_topk_train=100",
    "model.rpn.post_nms_topk_train=50",
    "solver.warmup_iters=1",
    "solver.checkpoint_period=1",
    "device=cpu",
]


def train_args(
    shapes: Path, out: Path, max_iter: int, *extra: str, train_json: Path | None = None
) -> list[str]:
    train_json = train_json or shapes / "annotations" / "instances_train.json"
    return [
        "train",
        "shapes",
        "--train-json",
        str(train_json),
        "--train-images",
        str(shapes / "train"),
        "--out",
        str(out),
        "--max-iter",
        str(max_iter),
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(the shapes dataset, a run trained 2 steps: last.pt and model_final.pt at iteration 2)."""
    root = tmp_path_factory.mktemp("resume")
    make_shapes(root / "shapes", 4, 1, seed=0, image_size=(64, 96))
    assert main(train_args(root / "shapes", root / "run", 2)) == 0
    return root / "shapes", root / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    return Path(shutil.copytree(finished[1], tmp_path / "run"))


def files_of(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def resume(shapes: Path, run: Path, capsys, *extra: str, train_json: Path | None = None) -> str:
    """The one error line of `train --resume` (3 iterations: past the run's 2) on `run`, which
    it leaves as it was."""
    before = files_of(run)
    capsys.readouterr()
    code = main(train_args(shapes, run, 3, "--resume", *extra, train_json=train_json))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "unexpected" not in err and "Traceback" not in err
    assert files_of(run) == before
    return err.removeprefix("error: ").rstrip("\n")


class Payload:
    """What a malicious pickle builds: a call to os.system, run while it loads."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("truncated", "truncated or corrupt checkpoint, cannot be read"),
        ("text", "not a PyTorch weights file"),
        ("empty", "the file is empty, not a weights file"),
        ("malicious zip", "holds posix.system, not only tensors"),
        ("malicious pickle", "refused: the pickle asks for the Python object posix.system"),
        ("foreign", "not a maskrcnn training checkpoint (the last.pt a run writes)"),
        ("model_final.pt", "a maskrcnn model without the training state --resume continues from (no "),
    ],
)
def test_an_unusable_last_checkpoint_is_one_line_naming_it(finished, run, tmp_path, capsys, kind, expected):
    last, marker = run / "last.pt", tmp_path / "PWNED"
    good = last.read_bytes()
    if kind == "truncated":
        last.write_bytes(good[: len(good) // 2])
    elif kind == "text":
        last.write_text("iteration: 2\n")
    elif kind == "empty":
        last.write_bytes(b"")
    elif kind == "malicious zip":
        torch.save({"model": Payload(marker)}, last)
    elif kind == "malicious pickle":
        last.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    elif kind == "foreign":
        torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, last)
    else:
        shutil.copy(run / "model_final.pt", last)
    line = resume(finished[0], run, capsys)
    assert line.startswith(f"{last}: {expected}"), line
    assert not marker.exists()
    if kind == "model_final.pt":
        assert line.endswith(
            f"optimizer, rng: a model_final.pt or model_best.pt copied over it?); start a new "
            f"run from its weights: --out NEW init_weights={last}"
        )


def test_a_damaged_final_model_beside_a_good_last_checkpoint_is_named(finished, run, capsys):
    final = run / "model_final.pt"
    final.write_bytes(final.read_bytes()[:1000])
    line = resume(finished[0], run, capsys)
    assert line.startswith(f"{final}: truncated or corrupt checkpoint, cannot be read"), line


def test_a_class_added_to_the_training_data_since_is_said(finished, run, tmp_path, capsys):
    shapes = finished[0]
    data = json.loads((shapes / "annotations" / "instances_train.json").read_text())
    data["categories"].append({"id": 4, "name": "star"})
    data["annotations"][0]["category_id"] = 4
    (tmp_path / "train4.json").write_text(json.dumps(data))
    line = resume(shapes, run, capsys, train_json=tmp_path / "train4.json")
    assert line == (
        f"{run / 'last.pt'}: its model has 4 classes (3 categories and the background), this run's "
        "training data 5: resume only the same run; start a new one from its weights with --out NEW "
        f"init_weights={run / 'last.pt'}"
    )


@pytest.mark.parametrize(
    "override, change",
    [
        # the weights' shapes differ
        ("model.backbone.fpn_channels=32", "model.backbone.fpn_channels: 16 in the checkpoint, 32 now"),
        # the same weights, another set of them trained: the optimizer's state does not fit
        ("model.backbone.freeze_at=2", "model.backbone.freeze_at: 0 in the checkpoint, 2 now"),
    ],
)
def test_a_model_setting_changed_since_is_said(finished, run, capsys, override, change):
    line = resume(finished[0], run, capsys, override)
    assert line == (
        f"{run / 'last.pt'}: its model differs from this run's ({change}): resume only the same run; "
        f"start a new one from its weights with --out NEW init_weights={run / 'last.pt'}"
    )


def test_the_same_run_resumes(finished, run, capsys):
    """What the failures above are measured against: the copied run continues."""
    assert main(train_args(finished[0], run, 3, "--resume")) == 0
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 3
