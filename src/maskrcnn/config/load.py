"""A TrainConfig from a YAML file and key=value overrides, knowing where each value came from."""

from maskrcnn.config.schema import COMMAND_LINE, ConfigError, TrainConfig, config_from_dict
from maskrcnn.config.validate import check_train_config

# The command line's shorthands for config keys (`maskrcnn train`'s, and those `ablate` sets for
# each run), written once: the parsers, the messages and the checks read them here.
FLAG_KEYS = {
    "--train-json": "data.train_json",
    "--train-images": "data.train_images",
    "--val-json": "data.val_json",
    "--val-images": "data.val_images",
    "--out": "output_dir",
    "--max-iter": "solver.max_iter",
    "--budget-minutes": "solver.budget_minutes",
    "--skip-bad-images": "data.skip_bad_images",
    "--eval-period": "solver.eval_period",
    "--patience": "solver.patience",
    "--best-metric": "solver.best_metric",
    "--device": "device",
}


def parse_overrides(overrides: list[str]) -> dict:
    """["solver.base_lr=0.01", "data.min_sizes_train=[640,800]"] -> nested dict.

    Values are read as YAML, so numbers, booleans, lists and null need no quoting. A value
    that is not valid YAML (an unclosed bracket) fails with a ConfigError naming its key.
    """
    import yaml

    nested: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{item!r} is not a key=value override (e.g. solver.base_lr=0.01)")
        node = nested
        parts = key.split(".")
        for index, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                prefix = ".".join(parts[: index + 1])
                raise ConfigError(f"{key}: conflicts with the override of {prefix}", key)
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{key}: {text!r} is not a valid value ({problem})", key) from None
    return nested


def _keys(data: dict, prefix: str = "") -> set[str]:
    """The dotted keys of a nested dict's values (its sections are not values)."""
    keys = set()
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        keys |= _keys(value, dotted) if isinstance(value, dict) and value else {dotted}
    return keys


def merge(base: dict, update: dict) -> dict:
    """Recursive dict update; returns a new dict."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML file (keys omitted keep their defaults) and key=value overrides.

    Raises ConfigError naming the key, where its value came from (the file or the command
    line), the value and what is accepted: unknown keys, wrong types, values out of range,
    settings that contradict each other, bad YAML.
    """
    return load_config_origins(path, overrides)[0]


def load_config_origins(path: str | None, overrides: list[str] = ()) -> tuple[TrainConfig, dict[str, str]]:
    """`load_config`, and the dotted keys the file or the overrides set, each with where its
    value came from (the file's path or COMMAND_LINE, which wins over the file)."""
    import yaml

    data: dict = {}
    if path:
        try:
            with open(path) as stream:
                data = yaml.safe_load(stream) or {}
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(data).__name__}")
    try:
        command_line = parse_overrides(list(overrides))
    except ConfigError as error:
        raise error.located(COMMAND_LINE) from None
    from_command_line, from_file = _keys(command_line), _keys(data)

    def origin(key: str) -> str:
        """Where `key`'s value came from: the command line wins over the file."""
        parts = key.split("[")[0].split(".")  # "data.min_sizes_train[1]" is data.min_sizes_train's
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if prefixes & from_command_line or any(k.startswith(f"{key}.") for k in from_command_line):
            return COMMAND_LINE
        return str(path) if path and prefixes & from_file else ""

    try:
        config = config_from_dict(TrainConfig, merge(data, command_line))
        check_train_config(config, origin)
    except ConfigError as error:
        raise error.located(origin(error.key) if error.key else str(path or "")) from None
    return config, {key: origin(key) for key in from_file | from_command_line}
