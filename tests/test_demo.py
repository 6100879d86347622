"""`make demo`'s script on a tiny shapes set: every step runs and leaves what the summary lists."""

import json

from maskrcnn.data.shapes import make_shapes
from maskrcnn.demo import main

SMALL = [  # configs/shapes.yaml at test size (as maskrcnn.testing.shapes_training_config)
    "data.num_workers=0",
    "data.images_per_batch=2",
    "data.min_sizes_train=[128]",
    "data.max_size_train=176",
    "model.input.min_size=128",
    "model.input.max_size=176",
    "solver.warmup_iters=1",
    "solver.log_period=1",
    "device=cpu",
]


def test_the_demo_trains_evaluates_and_draws(tmp_path, capsys):
    data, out = tmp_path / "shapes", tmp_path / "demo"
    make_shapes(data, 4, 3, seed=1)  # present: the demo uses it instead of writing 1100 images
    code = main(
        ["--data", str(data), "--out", str(out), "--budget-minutes", "0", "solver.max_iter=3", *SMALL]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "[1/4] using the shapes dataset" in printed and "for 3 iterations" in printed
    summary = printed[printed.index("maskrcnn demo summary") :]
    assert "iterations     3\n" in summary
    metrics = json.loads((out / "metrics.json").read_text())  # the trainer's final evaluation
    assert f"mask AP        {100 * metrics['segm']['AP']:.1f}" in summary
    for name in ("model_final.pt", "loss_curves.png", "precision_recall.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "vis").glob("*.png"))) == 3  # the whole validation split (< 12 images)
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert len(json.loads((out / "overlays" / "images.json").read_text())) == 3
