"""No module imports from a layer above its own.

The layers, lowest first: the base modules (maskrcnn/*.py: config, files, checkpoint,
device, ...), then data and ops, modeling, interop and export, engine, and the command line
(the cli package, demo.py, __main__.py). A module may import its own layer and the layers
below it. The sources are parsed, not imported, and an import anywhere in a module counts:
inside a function, under `if TYPE_CHECKING:`, relative or absolute.
"""

import ast
import textwrap
from pathlib import Path

PACKAGE = "maskrcnn"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Subpackage -> rank; layers of the same rank may import each other.
SUBPACKAGE_RANKS = {
    "config": 0,  # the base layer's settings, a package of their own
    "data": 1,
    "ops": 1,
    "modeling": 2,
    "interop": 3,
    "export": 3,
    "engine": 4,
    "evaluation": 4,
    "experiments": 4,
    "inference": 4,
    "serve": 4,
}
BASE_RANK, CLI_RANK = 0, 5
CLI_MODULES = {"cli", "demo", "__main__"}  # cli: the command line's package


def layer_of(module: str) -> tuple[str, int]:
    """(layer name, rank) of a dotted module name inside the package (the package itself: base)."""
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    if len(parts) == 1:
        return "base", BASE_RANK
    name = parts[1]
    if name in SUBPACKAGE_RANKS:
        return name, SUBPACKAGE_RANKS[name]
    if name in CLI_MODULES or name.startswith("cli_"):
        return "cli", CLI_RANK
    return "base", BASE_RANK


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module in `path`, `root` being the package's folder."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of each of the package's modules that `source` imports.

    `from a.b import c` imports a.b.c when that is a module (one of `known`), else a.b.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if candidate in known else base))
    ours = [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]
    return list(dict.fromkeys(ours))  # `from a import b, c`: a once


def violations(root: Path) -> list[str]:
    """'<file>:<line>: <module> (<layer>) imports <imported> (<layer>)' for each import of a
    higher layer in the package under `root`."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(path, root) for path in files}
    found = []
    for path in files:
        module = module_name(path, root)
        layer, rank = layer_of(module)
        source = path.read_text(encoding="utf-8")
        for line, imported in imported_modules(source, module, path.name == "__init__.py", known):
            imported_layer, imported_rank = layer_of(imported)
            if imported_rank > rank:
                found.append(
                    f"{path}:{line}: {module} ({layer}) imports {imported} ({imported_layer}), a higher layer"
                )
    return found


def test_no_module_imports_a_higher_layer():
    assert SOURCE.is_dir(), SOURCE
    assert violations(SOURCE) == []


def test_every_subpackage_has_a_layer():
    subpackages = {path.parent.name for path in SOURCE.glob("*/__init__.py")}
    assert subpackages <= set(SUBPACKAGE_RANKS), f"add {subpackages - set(SUBPACKAGE_RANKS)} to the layers"


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


def test_the_check_names_file_line_and_module_of_each_upward_import(tmp_path):
    root = tmp_path / PACKAGE
    for package in ("", "engine/", "interop/", "modeling/", "ops/"):
        write(root, f"{package}__init__.py", "")
    write(root, "config.py", "import os\n")
    write(root, "cli.py", "from maskrcnn.engine import trainer\n")  # down: allowed
    write(root, "engine/trainer.py", "from maskrcnn.interop.load import load\nfrom . import other\n")
    write(root, "engine/other.py", "")
    write(
        root,
        "interop/load.py",
        """\
        from maskrcnn.modeling import net
        from maskrcnn.ops.boxes import iou


        def load():
            from maskrcnn.engine.trainer import train
        """,
    )
    write(root, "modeling/net.py", "from ..engine import other\nimport maskrcnn.cli as cli\n")
    write(root, "ops/boxes.py", "from maskrcnn import config\nfrom maskrcnn.config import x\n")
    write(root, "modeling/both.py", "from maskrcnn.engine.other import a, b\n")
    write(root, "files.py", "from maskrcnn import cli\n")  # a base module

    found = violations(root)

    assert found == [
        f"{root / 'files.py'}:1: maskrcnn.files (base) imports maskrcnn.cli (cli), a higher layer",
        f"{root / 'interop/load.py'}:6: maskrcnn.interop.load (interop) imports maskrcnn.engine.trainer "
        "(engine), a higher layer",
        f"{root / 'modeling/both.py'}:1: maskrcnn.modeling.both (modeling) imports maskrcnn.engine.other "
        "(engine), a higher layer",
        f"{root / 'modeling/net.py'}:1: maskrcnn.modeling.net (modeling) imports maskrcnn.engine.other "
        "(engine), a higher layer",
        f"{root / 'modeling/net.py'}:2: maskrcnn.modeling.net (modeling) imports maskrcnn.cli (cli), "
        "a higher layer",
    ]


def test_layers_in_order():
    order = [
        "maskrcnn.config",
        "maskrcnn.checkpoint",
        "maskrcnn.data.coco",
        "maskrcnn.ops.boxes",
        "maskrcnn.modeling.rpn",
        "maskrcnn.interop.load",
        "maskrcnn.engine.trainer",
        "maskrcnn.cli.checks",
    ]
    ranks = [layer_of(name)[1] for name in order]
    assert ranks == sorted(ranks)
    assert layer_of("maskrcnn.demo") == layer_of("maskrcnn.__main__") == ("cli", CLI_RANK)
    assert layer_of("maskrcnn.export.onnx")[1] == layer_of("maskrcnn.interop.load")[1]
