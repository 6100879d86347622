"""Which model settings a trained model takes from `maskrcnn eval`'s config and overrides.

A checkpoint says how its model was built and how it was tested. At evaluation the test-time
settings (`TEST_TIME`: the test scale, the thresholds, the detection cap, the RPN's test-time
proposal counts, the mask pasting) may be set anew from the config file or the command line;
the architecture and the class count cannot change after training, and the settings of
training alone (`TRAINING_ONLY`: sampling, matching) do nothing at test time.

Torch-free: the command line applies these rules to what the user typed.
"""

from maskrcnn.config import COMMAND_LINE, ConfigError, ModelConfig, config_from_dict, config_to_dict

TEST_TIME = frozenset(
    {
        "input.min_size",
        "input.max_size",
        "rpn.pre_nms_topk_test",
        "rpn.post_nms_topk_test",
        "rpn.nms_threshold",
        "rpn.min_box_size",
        "roi_heads.score_threshold",
        "roi_heads.nms_threshold",
        "roi_heads.detections_per_image",
        "roi_heads.mask_threshold",
        "roi_heads.mask_paste",
        "roi_heads.empty_boxes",
        "keypoint_head.oks_sigmas",
        "keypoint_head.score",
    }
)
TRAINING_ONLY = frozenset(
    {
        "backbone.freeze_at",
        "rpn.pre_nms_topk_train",
        "rpn.post_nms_topk_train",
        "rpn.positive_iou",
        "rpn.negative_iou",
        "rpn.batch_size_per_image",
        "rpn.positive_fraction",
        "roi_heads.batch_size_per_image",
        "roi_heads.positive_fraction",
        "roi_heads.foreground_iou",
    }
)
# Read from the training data by the trainer; a config file's value is the data's business.
FROM_THE_DATA = frozenset(
    {
        "class_names",
        "category_ids",
        "keypoint_head.names",
        "keypoint_head.skeleton",
        "keypoint_head.num_keypoints",
    }
)


def flat_model_config(config: ModelConfig) -> dict:
    """{"roi_heads.detections_per_image": 100, ...}: every leaf of a model config."""
    flat = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{dotted}.")
            else:
                flat[dotted] = tuple(value) if isinstance(value, list) else value

    walk(config_to_dict(config), "")
    return flat


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_for_testing(
    checkpoint: ModelConfig, requested: ModelConfig, explicit: dict[str, str], weights: str
) -> tuple[ModelConfig, list[str]]:
    """The checkpoint's model config with the test-time settings the user set, and one line
    per value that differs from the checkpoint's.

    requested: the model section of the config `eval` was given; explicit: the dotted keys the
    user set (`config.load_config_origins`), each with where it came from. The command line's
    test-time settings always apply; a config file's apply when the file describes the
    checkpoint's model (a file that describes another one, say a training config of another
    size used for its data section, contributes nothing of its model section, and one line
    says so). Raises ConfigError naming a setting given on the command line that cannot change
    after training (the architecture, the classes) or that does nothing at test time.
    """
    trained, wanted = flat_model_config(checkpoint), flat_model_config(requested)
    differing = {}  # key -> origin, of the values the user set that differ from the checkpoint's
    for dotted, origin in explicit.items():
        key = dotted.removeprefix("model.").split("[")[0]
        if dotted.startswith("model.") and key in wanted and key not in FROM_THE_DATA:
            if key == "anchors.sizes" and wanted[key] == "auto":
                continue  # fitted to the training data: the checkpoint holds the fitted sizes
            if wanted[key] != trained.get(key):
                differing[key] = origin
    lines = []
    other_model = sorted(
        k for k, o in differing.items() if o != COMMAND_LINE and k not in TEST_TIME | TRAINING_ONLY
    )
    if other_model:
        first = other_model[0]
        more = f", and {len(other_model) - 1} more" if len(other_model) > 1 else ""
        lines.append(
            f"{differing[first]}: its model section describes another model than {weights} "
            f"(model.{first} {_shown(wanted[first])}, not {_shown(trained.get(first))}{more}); the "
            "checkpoint's model is used, with the command line's test-time settings"
        )
    changed = {}
    for key, origin in sorted(differing.items()):
        if origin != COMMAND_LINE and (other_model or key not in TEST_TIME):
            continue  # the file's settings of another model, or of training
        if key in TEST_TIME:
            changed[key] = wanted[key]
            lines.append(
                f"model.{key}: {_shown(wanted[key])} ({origin}), "
                f"not the checkpoint's {_shown(trained.get(key))}"
            )
        elif key in TRAINING_ONLY:
            raise ConfigError(
                f"model.{key}={_shown(wanted[key])}: a setting of training alone, which does nothing "
                "when a trained model is evaluated; leave it out",
                f"model.{key}",
            )
        else:
            raise ConfigError(
                f"model.{key}={_shown(wanted[key])}: {weights} was trained with {_shown(trained.get(key))}, "
                "and the architecture and the classes cannot change after training (what can: "
                f"{', '.join(sorted('model.' + k for k in TEST_TIME))})",
                f"model.{key}",
            )
    if not changed:
        return checkpoint, lines
    data = config_to_dict(checkpoint)
    for key, value in changed.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    from maskrcnn.config.validate import check_model_config

    config = config_from_dict(ModelConfig, data)
    check_model_config(config)
    return config, lines
