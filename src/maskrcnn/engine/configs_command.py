"""`maskrcnn configs`: the built-in configs, or one of them in full."""

from maskrcnn.builtin_configs import builtin_config, builtin_configs, describe


def configs_command(name: str | None = None) -> int:
    """Without `name`: one line per built-in config, its name and description, sorted and
    aligned. With `name`: a `# <path>` line, then the file as it is, so that the output
    redirected to a file is a config to edit. Returns 0; raises OptionError for an unknown name."""
    if name is not None:
        path = builtin_config(name)
        text = path.read_text(encoding="utf-8")
        print(f"# {path}")
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    configs = builtin_configs()
    width = max((len(n) for n in configs), default=0)
    for config_name in sorted(configs):
        print(f"{config_name:<{width}}  {describe(configs[config_name])}".rstrip())
    return 0
