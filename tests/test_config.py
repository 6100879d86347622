import pytest

from maskrcnn.config import ConfigError, ModelConfig, config_from_dict, config_to_dict


def test_round_trip_through_plain_data():
    config = ModelConfig(num_classes=5, class_names=("bg", "a", "b", "c", "d"))
    config.anchors.strides = None
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
    config = config_from_dict(ModelConfig, {"backbone": {"norm_eps": 0}, "anchors": {"strides": None}})
    assert config.backbone.norm_eps == 0.0 and isinstance(config.backbone.norm_eps, float)
    assert config.anchors.strides is None
