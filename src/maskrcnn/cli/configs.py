"""`maskrcnn configs`: the built-in configs, or one of them in full."""

import argparse

from maskrcnn.builtin_configs import builtin_config, builtin_configs, describe


def add(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "configs",
        help="list the built-in configs, or print one",
        description=(
            "List the configs that come with the package, one line each: the name that train and "
            "eval take as CONFIG, and what the config is for. With NAME, print that config's path "
            "as a YAML comment and then the file, e.g. `maskrcnn configs shapes > mine.yaml` to "
            "start a config of your own."
        ),
    )
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="a built-in config's name (with or without .yaml) to print in full (default: list them all)",
    )
    return parser


def check(args: argparse.Namespace) -> None:
    if args.name is not None:
        builtin_config(args.name)  # OptionError for an unknown name


def run(args: argparse.Namespace) -> int:
    """Without NAME: one line per built-in config, its name and description, sorted and
    aligned. With NAME: a `# <path>` line, then the file as it is, so that the output
    redirected to a file is a config to edit."""
    if args.name is not None:
        path = builtin_config(args.name)
        text = path.read_text(encoding="utf-8")
        print(f"# {path}")
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    configs = builtin_configs()
    width = max((len(n) for n in configs), default=0)
    for config_name in sorted(configs):
        print(f"{config_name:<{width}}  {describe(configs[config_name])}".rstrip())
    return 0
