"""Per-channel intensity normalization and the checks of model.input's settings."""

import numpy as np
import pytest
import torch

from maskrcnn import ModelConfig, build_model
from maskrcnn.config import ConfigError, InputConfig
from maskrcnn.config.validate import check_input_config
from maskrcnn.data.intensity import channel_percentiles, normalize_channels


@pytest.mark.parametrize("count", [1, 2, 7, 1000, 4099])
@pytest.mark.parametrize("percentiles", [(1.0, 99.8), (0.0, 100.0), (25.0, 50.0), (0.3, 99.99)])
def test_percentiles_are_numpys_linear_interpolation(count, percentiles):
    rng = np.random.default_rng(count)
    # Many repeated values, as integer pixels have, and a heavy tail of hot pixels.
    values = np.round(rng.gamma(2.0, 30.0, size=(3, count))).astype(np.float64)
    values[1] *= 100
    result = channel_percentiles(torch.from_numpy(values), percentiles).numpy()
    expected = np.stack([np.percentile(row, percentiles) for row in values])
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)


def test_percentile_normalization_maps_each_channel_by_its_own_percentiles():
    rng = np.random.default_rng(0)
    image = np.stack(
        [rng.normal(100, 5, (30, 40)), rng.normal(3000, 400, (30, 40)), rng.normal(0, 1, (30, 40))]
    )
    result = normalize_channels(torch.from_numpy(image), "percentile", (1.0, 99.8)).numpy()
    for channel, values in zip(result, image):
        low, high = np.percentile(values, (1.0, 99.8))
        np.testing.assert_allclose(channel, np.clip((values - low) / (high - low), 0, 1), atol=1e-12)
        assert abs((channel == 0).mean() - 0.01) < 0.002 and abs((channel == 1).mean() - 0.002) < 0.002


def test_minmax_normalization_is_per_channel():
    image = torch.stack([torch.linspace(10, 20, 50), torch.linspace(-3, 500, 50)]).reshape(2, 5, 10)
    result = normalize_channels(image, "minmax")
    assert result.shape == (2, 5, 10) and result.dtype == image.dtype
    for channel, values in zip(result, image):
        torch.testing.assert_close(channel, (values - values.min()) / (values.max() - values.min()))


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_a_constant_channel_becomes_zeros_not_nan(method):
    image = torch.stack([torch.full((6, 7), 812.0), torch.arange(42.0).reshape(6, 7)])
    result = normalize_channels(image, method)
    assert torch.isfinite(result).all()
    assert (result[0] == 0).all()
    assert result[1].max() == 1 and result[1].min() == 0


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"intensity": "log"}, "model.input.intensity"),
        ({"percentiles": (99.0, 1.0)}, "model.input.percentiles"),
        ({"percentiles": (-1.0, 50.0)}, "model.input.percentiles"),
        ({"percentiles": (1.0, 100.5)}, "model.input.percentiles"),
        ({"percentiles": (5.0, 5.0)}, "model.input.percentiles"),
        ({"channels": 0}, "model.input.channels"),
        ({"channels": 1}, "model.input.pixel_mean=[0.485, 0.456, 0.406] contradicts model.input.channels=1"),
        ({"channels": 2, "pixel_mean": (0.5, 0.5)}, "model.input.pixel_std=[0.229, 0.224, 0.225] contra"),
    ],
)
def test_bad_input_settings_name_the_key(changes, key):
    with pytest.raises(ConfigError) as error:
        check_input_config(InputConfig(**changes))
    assert key in str(error.value)


def test_building_a_model_checks_the_mean_per_channel():
    with pytest.raises(
        ConfigError, match=r"model\.input\.pixel_mean=\[.*\] contradicts model\.input\.channels=4"
    ):
        build_model(ModelConfig(num_classes=2, input=InputConfig(channels=4)))


def test_valid_settings_pass():
    check_input_config(InputConfig())
    check_input_config(InputConfig(channels=1, pixel_mean=(0.5,), pixel_std=(0.25,), intensity="percentile"))
    check_input_config(
        InputConfig(channels=2, pixel_mean=(0.5, 0.4), pixel_std=(0.2, 0.3), percentiles=(0, 100))
    )
