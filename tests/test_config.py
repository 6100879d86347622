import re

import pytest

from maskrcnn.config import ConfigError, ModelConfig, config_from_dict, config_to_dict, load_config


def test_round_trip_through_plain_data():
    config = ModelConfig(num_classes=5, class_names=("bg", "a", "b", "c", "d"))
    config.anchors.strides_from = "image"
    config.roi_heads.pooler = "pool"
    assert config_from_dict(ModelConfig, config_to_dict(config)) == config


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="roi_heads.pooler_kind"):
        config_from_dict(ModelConfig, {"roi_heads": {"pooler_kind": "align"}})


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"num_classes": "many"}, "num_classes: expected int"),
        ({"num_classes": True}, "num_classes: expected int"),
        ({"backbone": {"norm_eps": "small"}}, "backbone.norm_eps: expected float"),
        ({"anchors": {"sizes": [32, "big"]}}, "anchors.sizes[1]: expected int"),
        ({"rpn": {"box_weights": [1.0, 1.0]}}, "rpn.box_weights: expected 4 values"),
        ({"backbone": 3}, "backbone: expected a mapping"),
    ],
)
def test_wrong_types_name_the_key_and_expected_type(data, fragment):
    with pytest.raises(ConfigError) as error:
        config_from_dict(ModelConfig, data)
    assert fragment in str(error.value)


def test_ints_are_accepted_for_floats_and_none_for_optional():
    config = config_from_dict(ModelConfig, {"backbone": {"norm_eps": 0, "stage_blocks": None}})
    assert config.backbone.norm_eps == 0.0 and isinstance(config.backbone.norm_eps, float)
    assert config.backbone.stage_blocks is None


@pytest.mark.parametrize(("strides", "strides_from"), [(None, "image"), ([4, 8, 16, 32, 64], "backbone")])
def test_configs_of_earlier_versions_with_anchor_strides_still_load(strides, strides_from):
    config = config_from_dict(ModelConfig, {"anchors": {"strides": strides}})
    assert config.anchors.strides_from == strides_from


def test_a_checkpoint_config_without_the_input_channel_keys_loads_with_defaults():
    # Written before model.input had channels, intensity and percentiles.
    old = config_to_dict(ModelConfig(num_classes=3))
    for key in ("channels", "intensity", "percentiles"):
        del old["input"][key]
    config = config_from_dict(ModelConfig, old)
    loaded = config.input
    assert (loaded.channels, loaded.intensity, loaded.percentiles) == (3, "auto", (1.0, 99.8))
    gray = config_from_dict(ModelConfig, {"input": {"channels": 1, "pixel_mean": [0.5], "pixel_std": [0.2]}})
    assert gray.input.pixel_mean == (0.5,) and gray.input.pixel_std == (0.2,)


SHAPES = "configs/shapes.yaml"


@pytest.mark.parametrize(
    "override, expected",
    [
        # malformed YAML on the command line names its key, not a parser traceback
        ("data.min_sizes_train=[480,512", "data.min_sizes_train (from the command line): '[480,512' is not"),
        ("solver.base_lr=-1", "solver.base_lr=-1.0 (from the command line): expected a number > 0"),
        # a wrong type blames the command line, where it came from, not the YAML file
        ("solver.base_lr=abc", "solver.base_lr (from the command line): expected float, got 'abc'"),
        # the full dotted key, as the user wrote it
        ("model.backbone.norm=xyz", "model.backbone.norm='xyz' (from the command line): expected one of"),
        ("model.rpn.nms_threshold=1.5", "model.rpn.nms_threshold=1.5 (from the command line)"),
        ("solver.precision=fp8", "solver.precision='fp8' (from the command line): expected one of fp32"),
        ("device=gpu", "device='gpu' (from the command line): expected auto, cpu, cuda"),
        ("data.num_workers=-2", "data.num_workers=-2 (from the command line): expected an integer >= 0"),
        # a typo with extra zeros would fork or allocate until the machine gives up
        (
            "data.num_workers=4000",
            "data.num_workers=4000 (from the command line): expected an integer >= 0 and <= 256",
        ),
        (
            "data.images_per_batch=20000",
            "data.images_per_batch=20000 (from the command line): expected an integer >= 1 and <= 1024",
        ),
        (
            "data.max_size_train=1333000",
            "data.max_size_train=1333000 (from the command line): expected an integer >= 1 and <= 16384",
        ),
        (
            "model.input.min_size=800000",
            "model.input.min_size=800000 (from the command line): expected an integer >= 1 and <= 16384",
        ),
        ("solver.steps=[300,200]", "solver.steps=[300, 200] (from the command line): expected iterations in"),
        ("solver.base_lr.x=3", "solver.base_lr (from the command line): expected float, got {'x': 3}"),
        ("=3", "the command line: '=3' is not a key=value override"),
        ("data.flip_probability=.nan", "data.flip_probability=nan (from the command line)"),
    ],
)
def test_bad_overrides_name_key_origin_value_and_what_is_accepted(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(SHAPES, [override])
    assert str(error.value).startswith(expected), str(error.value)


def test_contradicting_sizes_name_both_keys_and_their_files():
    with pytest.raises(ConfigError) as error:
        load_config(SHAPES, ["data.min_sizes_train=[480,512,544]"])
    message = str(error.value)
    assert "data.min_sizes_train=[480, 512, 544] (from the command line)" in message
    assert f"data.max_size_train=288 (from {SHAPES})" in message
    assert load_config(SHAPES, ["data.min_sizes_train=[480,512,544]", "data.max_size_train=900"])


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("solver:\n  momentum: 1.5\nmodel:\n  roi_heads:\n    pooler: bilinear\n")
    with pytest.raises(ConfigError, match=rf"model.roi_heads.pooler='bilinear' \(from {path}\)"):
        load_config(str(path), [])
    with pytest.raises(ConfigError, match=rf"solver.momentum=1.5 \(from {path}\)"):
        load_config(str(path), ["model.roi_heads.pooler=align"])


def test_a_misspelt_key_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'solver.momentum'"):
        load_config(SHAPES, ["solver.momentun=0.9"])


def test_every_shipped_config_passes_its_checks():
    from pathlib import Path

    for path in sorted(Path("configs").glob("*.yaml")):
        assert load_config(str(path), [])


def test_a_run_length_scales_the_schedule_with_it():
    solver = load_config(SHAPES).solver  # 2000 iterations: warm-up 100, drops at 1550 and 1850
    short = solver.scaled_to(500)
    assert (short.max_iter, short.warmup_iters, short.steps) == (500, 25, (388, 462))
    assert solver.scaled_to(1).steps == (1, 1) and solver.scaled_to(2000) == solver


def test_numbers_as_people_write_them_in_files_and_on_the_command_line(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; a config still takes it as the number
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  base_lr: 1e-3\n  weight_decay: 2E-4\n  max_iter: 1_000\n")
    config = load_config(str(path), ["solver.warmup_iters=1e2", "solver.momentum=.5", "solver.gamma=+1E-1"])
    solver = config.solver
    assert (solver.base_lr, solver.weight_decay, solver.max_iter) == (0.001, 0.0002, 1000)
    assert (solver.warmup_iters, solver.momentum, solver.gamma) == (100, 0.5, 0.1)
    assert isinstance(solver.max_iter, int) and isinstance(solver.warmup_iters, int)
    for bad, message in [
        ("solver.base_lr=1e-3x", "expected float, got '1e-3x'"),
        ("solver.base_lr=nan", "expected float, got 'nan'"),
        ("solver.max_iter=1.5", "expected int, got 1.5"),
        ("output_dir=1e3", None),  # a string field keeps the text
    ]:
        if message is None:
            assert load_config(None, [bad]).output_dir == "1e3"
            continue
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [bad])


@pytest.mark.parametrize(
    "overrides, key, why",
    [
        (["model.backbone.kind=c4", "model.roi_heads.fc_dim=256"], "model.roi_heads.fc_dim=256", "res5"),
        (
            ["model.backbone.kind=c5", "model.backbone.fpn_channels=128"],
            "model.backbone.fpn_channels=128",
            "no FPN",
        ),
        (
            ["model.backbone.kind=c4", "model.roi_heads.mask_num_convs=2"],
            "model.roi_heads.mask_num_convs=2",
            "no convolution",
        ),
        (
            ["model.roi_heads.mask_head=mlp", "model.roi_heads.mask_conv_dim=64"],
            "model.roi_heads.mask_conv_dim=64",
            "MLP",
        ),
        (["model.roi_heads.mask_fc_dim=512"], "model.roi_heads.mask_fc_dim=512", "FCN mask head"),
        (["data.augment=paper", "data.lsj_size=160"], "data.lsj_size=160", "square"),
        (["data.augment=auto", "data.lsj_scale_range=[0.5,1.5]"], "data.lsj_scale_range=[0.5, 1.5]", "scale"),
        (["data.augment=lsj", "data.min_sizes_train=[160]"], "data.min_sizes_train=[160]", "lsj_size square"),
        (["data.augment=lsj+copy_paste", "data.max_size_train=640"], "data.max_size_train=640", "crops to"),
    ],
)
def test_a_setting_the_chosen_design_does_not_read_is_refused(overrides, key, why):
    with pytest.raises(
        ConfigError, match=rf"{re.escape(key)} \(from the command line\) has no effect with .*{why}"
    ):
        load_config(None, overrides)
    # at the default value it says nothing: the setting is simply not used
    load_config(None, [overrides[0], f"{key.split('=')[0]}={_default(key.split('=')[0])}"])


def _default(dotted):
    from maskrcnn.config import TrainConfig

    value = TrainConfig()
    for part in dotted.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


def test_a_files_training_sizes_under_lsj_chosen_on_the_command_line_are_a_warning(tmp_path):
    from maskrcnn.config.validate import ConfigWarning

    # the shapes file sets the paper's resize (sizes 160-208, long side 288): under large-scale
    # jitter they are not read, which is said once each; the same keys in a file that also
    # asks for lsj are refused
    with pytest.warns(ConfigWarning) as caught:
        config = load_config("configs/shapes.yaml", ["data.augment=lsj"])
    messages = sorted(str(w.message) for w in caught)
    assert [m.split("=")[0] for m in messages] == ["data.max_size_train", "data.min_sizes_train"]
    assert all("the file's value is not used" in m for m in messages)
    assert config.data.augment == "lsj"
    path = tmp_path / "lsj.yaml"
    path.write_text("data:\n  augment: lsj\n  min_sizes_train: [160, 176]\n")
    refused = r"data.min_sizes_train=\[160, 176\] \(from .*lsj.yaml\) has no effect"
    with pytest.raises(ConfigError, match=refused):
        load_config(str(path), [])
    # a maximum below the sizes is no contradiction where neither is read
    path.write_text("data:\n  min_sizes_train: [1000]\n  max_size_train: 900\n")
    with pytest.raises(ConfigError, match="data.min_sizes_train"):
        load_config(str(path), [])
    with pytest.warns(ConfigWarning):
        assert load_config(str(path), ["data.augment=lsj"]).data.augment == "lsj"


def test_a_files_setting_under_a_design_chosen_on_the_command_line_is_a_warning(tmp_path):
    from maskrcnn.config.validate import ConfigWarning

    # the shapes file is written for FPN (fc_dim 512, fpn_channels 64): trained as C4, one warning each
    with pytest.warns(ConfigWarning) as caught:
        load_config("configs/shapes.yaml", ["model.backbone.kind=c4"])
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith("model.backbone.fpn_channels=64 (from configs/shapes.yaml) has no effect")
    assert messages[1].startswith("model.roi_heads.fc_dim=512 (from configs/shapes.yaml) has no effect")
    # the same design chosen in the file itself: an error
    path = tmp_path / "c4.yaml"
    path.write_text("model:\n  backbone:\n    kind: c4\n  roi_heads:\n    fc_dim: 512\n")
    with pytest.raises(ConfigError, match=r"fc_dim=512 \(from .*c4.yaml\) has no effect"):
        load_config(str(path))
