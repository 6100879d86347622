"""Configuration: the typed schema (`schema`: one dataclass per component, their plain-data
form), its checks (`validate`: ranges, choices, contradictions, settings a design does not
read) and loading (`load`: YAML and key=value overrides, where each value came from). Free of
torch: the command line checks what the user typed before it loads.
"""

from maskrcnn.config.load import FLAG_KEYS, load_config, load_config_origins, merge, parse_overrides
from maskrcnn.config.schema import (
    COMMAND_LINE,
    AnchorConfig,
    BackboneConfig,
    ConfigError,
    DataConfig,
    InputConfig,
    KeypointHeadConfig,
    ModelConfig,
    RoIHeadsConfig,
    RPNConfig,
    SolverConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    written_number,
)

__all__ = [
    "COMMAND_LINE",
    "FLAG_KEYS",
    "AnchorConfig",
    "BackboneConfig",
    "ConfigError",
    "DataConfig",
    "InputConfig",
    "KeypointHeadConfig",
    "ModelConfig",
    "RPNConfig",
    "RoIHeadsConfig",
    "SolverConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_config_origins",
    "merge",
    "parse_overrides",
    "written_number",
]
