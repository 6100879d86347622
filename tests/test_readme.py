"""The README's examples are what the code does: its command lines parse, its command reference
names every option, and its ONNX input recipe builds the input the export's own check builds."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskrcnn.cli.main import build_parser, parse_args
from maskrcnn.config import InputConfig
from maskrcnn.data.images import load_image
from maskrcnn.export.onnx import graph_input

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def command_lines() -> list[str]:
    """Every `maskrcnn ...` line of the README's bash blocks, continuation lines joined."""
    lines = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("maskrcnn "):
                lines.append(line)
    return lines


def test_the_readme_has_command_lines_of_every_command():
    used = {shlex.split(line)[1] for line in command_lines()}
    assert used == set(build_parser().subcommand_parsers)


@pytest.mark.parametrize("line", command_lines())
def test_each_command_line_of_the_readme_parses(line):
    args = parse_args(shlex.split(line)[1:])
    assert callable(args.run)
    for item in getattr(args, "overrides", []):  # overrides are key=value, never a stray word
        assert re.fullmatch(r"[a-z_.]+=\S+", item), item


def reference_section(command: str) -> str:
    start = README.index(f"### `maskrcnn {command} ")
    end = README.find("\n#", start + 1)
    return README[start:end]


@pytest.mark.parametrize("command", sorted(build_parser().subcommand_parsers))
def test_the_command_reference_documents_every_option(command):
    section = reference_section(command)
    parser = build_parser().subcommand_parsers[command]
    for action in parser._actions:
        if action.dest == "help":
            continue
        name = action.option_strings[0] if action.option_strings else action.metavar
        # The name ends at a space (its value) or the cell's closing backtick: --tile is not --tile-overlap.
        rows = [row for row in section.splitlines() if row.startswith((f"| `{name} ", f"| `{name}`"))]
        assert len(rows) == 1, f"maskrcnn {command} {name}: not in the README's command reference"
        default = action.default
        if action.option_strings and not action.required and default not in (None, False):
            assert f"| {default} |" in rows[0], rows[0]  # the default, as --help shows it


@pytest.fixture(scope="module")
def onnx_input():
    """The README's `onnx_input`, defined by running its code up to the first session."""
    (code,) = [block for block in blocks("python") if "def onnx_input" in block]
    namespace: dict = {}
    exec(code.split("session = ")[0].replace("import onnxruntime\n", ""), namespace)
    return namespace["onnx_input"]


def test_the_readme_onnx_input_of_an_8_bit_photograph(onnx_input, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    expected = graph_input(load_image(tmp_path / "photo.png"), InputConfig(intensity="range")).numpy()
    ours = onnx_input(str(tmp_path / "photo.png"))
    assert ours.dtype == np.float32 and ours.shape == (3, 30, 40)
    np.testing.assert_allclose(ours, expected, atol=1e-7)


def test_the_readme_onnx_input_of_a_16_bit_tile_for_a_percentile_model(onnx_input, tmp_path, nuclei_image):
    tile, _, _ = nuclei_image()
    Image.fromarray(tile).save(tmp_path / "tile.png")
    config = InputConfig(channels=1, pixel_mean=(0.5,), pixel_std=(0.25,), intensity="percentile")
    expected = graph_input(load_image(tmp_path / "tile.png"), config).numpy()
    ours = onnx_input(str(tmp_path / "tile.png"), "percentile", channels=1)
    assert ours.shape == (1, *tile.shape) and ours.max() > 200  # the raw values, not [0, 1]
    np.testing.assert_array_equal(ours, expected)


def test_the_readme_onnx_input_of_a_gray_image_for_an_rgb_model(onnx_input, tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "gray.png")
    expected = graph_input(load_image(tmp_path / "gray.png"), InputConfig(intensity="range")).numpy()
    np.testing.assert_allclose(onnx_input(str(tmp_path / "gray.png")), expected, atol=1e-7)
