"""The configs that ship inside the package (`maskrcnn/configs/*.yaml`), by name.

A command's CONFIG argument is a path or the name of one of these ("shapes", or "shapes.yaml"),
so that an installed package can train without a clone of the repository; `maskrcnn configs`
lists them. Each file starts with a block of `# ` comment lines that describes it; the first
sentence of that block is its one-line description.

Free of torch: the command line resolves CONFIG before any work.
"""

import difflib
from pathlib import Path

from maskrcnn.errors import OptionError, shown
from maskrcnn.path_checks import existing_file

CONFIG_FOLDER = Path(__file__).resolve().parent / "configs"
SUFFIX = ".yaml"


def builtin_configs() -> dict[str, Path]:
    """The built-in configs: file stem (e.g. "shapes") -> the packaged YAML file, sorted by name."""
    return {path.stem: path for path in sorted(CONFIG_FOLDER.glob(f"*{SUFFIX}"))}


def describe(path: str | Path) -> str:
    """One line about a config: the first sentence of its leading `#` comment block, cut
    before a colon that opens details ("" when the file starts without a comment)."""
    comment = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    return first_sentence(" ".join(part for part in comment if part))


def first_sentence(text: str) -> str:
    """`text` up to its first ". " or ": " outside parentheses (a period is kept, a colon
    dropped); all of `text` when it has neither."""
    depth = 0
    for index, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char in ".:" and depth == 0 and (index + 1 == len(text) or text[index + 1] == " "):
            return text[: index + 1] if char == "." else text[:index]
    return text


def resolve_config(text: str, option: str = "CONFIG") -> str:
    """The config file that `text` names: an existing file as given; else a built-in
    config's name, with or without ".yaml", as its packaged file (also when a folder of that
    name is in the working folder, such as the `shapes` dataset).

    Raises OptionError (one line, naming `option`) for anything else: "no such file" for
    what looks like a path (it has a "/", or ends in .yaml and is no built-in name),
    otherwise "no such file or built-in config"; both suggest the close built-in names.
    """
    path = Path(text)
    if text and path.is_file():
        return text
    in_folder = "/" in text or "\\" in text
    name = text[: -len(SUFFIX)] if text.endswith(SUFFIX) else text
    configs = builtin_configs()
    if not in_folder and name in configs:
        return str(configs[name])
    looks_like_path = in_folder or text.endswith((SUFFIX, ".yml"))
    if text and path.exists():
        existing_file(option, text)  # a folder: refused, by name
    problem = "no such file" if looks_like_path else "no such file or built-in config"
    raise OptionError(f"{shown(option, text)}: {problem}{_suggestion(path.stem)}")


def builtin_config(text: str, option: str = "NAME") -> Path:
    """The packaged file of the built-in config `text` ("shapes" or "shapes.yaml"); raises
    OptionError naming `option` and the close names when there is none."""
    name = text[: -len(SUFFIX)] if text.endswith(SUFFIX) else text
    configs = builtin_configs()
    if name in configs:
        return configs[name]
    raise OptionError(f"{shown(option, text)}: no such built-in config{_suggestion(name)}")


def _suggestion(name: str) -> str:
    """The did-you-mean of a name that is no built-in config, and where the names are listed."""
    close = difflib.get_close_matches(name, list(builtin_configs()), n=3, cutoff=0.6)
    if not close:
        return " (`maskrcnn configs` lists the built-in configs)"
    names = close[0] if len(close) == 1 else ", ".join(close[:-1]) + f" or {close[-1]}"
    kind = "a built-in config" if len(close) == 1 else "built-in configs"
    return f"; did you mean {names}? ({kind}; `maskrcnn configs` lists them)"
