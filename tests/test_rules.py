"""Each rule is written once: changed in its one place, every path that applies it follows
(the model, the command line, the server, training and `maskrcnn eval`)."""

import json

import pytest

from maskrcnn import choices
from maskrcnn.cli.main import main
from maskrcnn.config import FLAG_KEYS, ConfigError, load_config
from maskrcnn.serve.settings import tile_problem


def test_the_tiling_rule_is_the_models_the_command_lines_and_the_servers(monkeypatch, tmp_path, capsys):
    from maskrcnn.modeling.tiling import check_tiling

    def only_even(tile, overlap, tile_name="tile", overlap_name="tile_overlap"):
        return f"{tile_name} {tile}: odd tiles are not allowed here" if tile and tile % 2 else None

    monkeypatch.setattr(choices, "tiling_problem", only_even)
    with pytest.raises(ValueError, match="tile 129: odd tiles are not allowed here"):
        check_tiling(129, 16)
    check_tiling(130, 999)  # the rule as changed: no overlap limit any more
    assert tile_problem(129, None) == "query parameter tile 129: odd tiles are not allowed here"
    image = tmp_path / "a.png"
    image.write_bytes(b"")  # never read: the options are refused first
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    argv = ["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / "o"), "--tile", "129"]
    assert main(argv) == 2
    assert "--tile 129: odd tiles are not allowed here" in capsys.readouterr().err


def test_the_device_rule_is_the_command_lines_and_the_configs(monkeypatch, capsys):
    monkeypatch.setattr(choices, "is_device", lambda text: text in ("cpu", "tpu"))
    monkeypatch.setattr(choices, "DEVICES_ACCEPTED", "cpu or tpu")
    assert load_config(None, ["device=tpu"]).device == "tpu"
    with pytest.raises(ConfigError, match="device='cuda'.*expected cpu or tpu"):
        load_config(None, ["device=cuda"])
    assert main(["eval", "shapes", "--weights", "w.pt", "--device", "cuda"]) == 2
    assert "--device cuda: expected cpu or tpu" in capsys.readouterr().err


def _value_at(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def test_the_flags_config_keys_are_trains_and_ablates(monkeypatch, tmp_path, capsys):
    from maskrcnn.cli.main import parse_args
    from maskrcnn.data.shapes import make_shapes

    # ablate refuses an override of a key a flag owns, naming the flag from the one table
    assert main(["ablate", "2c", f"{FLAG_KEYS['--out']}=x"]) == 2
    err = capsys.readouterr().err
    assert f"{FLAG_KEYS['--out']}=x: ablate sets {FLAG_KEYS['--out']} for each run; use --out" in err
    # train's flags set the keys the table names: change the table, the command follows
    paths = make_shapes(tmp_path / "shapes", 1, 1)
    data = ["--train-json", str(paths["train_annotations"]), "--train-images", str(paths["train_images"])]
    data += ["--val-json", str(paths["val_annotations"])]
    # (--out of the second sets the validation images: no --val-images beside it)
    for key, more in (("output_dir", ["--val-images", str(paths["val_images"])]), ("data.val_images", [])):
        monkeypatch.setitem(FLAG_KEYS, "--out", key)
        args = parse_args(
            ["train", "shapes", *data, *more, "--out", str(paths["val_images"]), "--budget-minutes", "3"]
        )
        args.check(args)
        assert _value_at(args.train_config, key) == str(paths["val_images"])
        assert _value_at(args.train_config, FLAG_KEYS["--budget-minutes"]) == 3.0


def test_training_and_eval_score_the_same_split_and_write_the_same_reports(monkeypatch, tmp_path):
    from maskrcnn.engine import training_data
    from maskrcnn.evaluation import reports as reports_module

    splits, reports = [], []
    original_split, original_reports = training_data.scoring_split, reports_module.write_reports

    def split(*args, **kwargs):
        splits.append(args[0])
        return original_split(*args, **kwargs)

    def write(metrics, evaluations, results, dataset, out, *args, **kwargs):
        reports.append(out)
        return original_reports(metrics, evaluations, results, dataset, out, *args, **kwargs)

    monkeypatch.setattr(training_data, "scoring_split", split)
    monkeypatch.setattr(reports_module, "write_reports", write)
    from maskrcnn.data.shapes import make_shapes
    from maskrcnn.engine.trainer import train
    from maskrcnn.testing import shapes_training_config

    make_shapes(tmp_path / "shapes", 2, 1)
    train(shapes_training_config(tmp_path / "shapes", tmp_path / "run", "solver.max_iter=1"))
    val = str(tmp_path / "shapes" / "annotations" / "instances_val.json")
    argv = ["eval", "shapes", "--weights", str(tmp_path / "run" / "model_final.pt"), "--json", val]
    argv += ["--images", str(tmp_path / "shapes" / "val"), "--out", str(tmp_path / "eval"), "--device", "cpu"]
    assert main(argv) == 0
    assert [str(s) for s in splits] == [val, val]  # the run's validation split, then eval's
    assert reports == [tmp_path / "run", tmp_path / "eval"]
    run_keys = json.loads((tmp_path / "run" / "metrics.json").read_text()).keys() - {"best"}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()).keys() == run_keys
    # and the same report files beside it
    reported = ("metrics.json", "precision_recall.png", "confusion_matrix.json", "confusion_matrix.png")
    assert all((tmp_path / folder / name).exists() for folder in ("run", "eval") for name in reported)
