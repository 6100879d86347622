"""`maskrcnn eval`: COCO AP of a model (or of a results file) on a COCO-format split.

The inputs are checked (`evaluate_checks`) before the work's modules, and torch with them,
are imported (`evaluate_run`), so that a wrong path or value is answered at once.
"""

import os
import sys

from maskrcnn.config import ConfigError
from maskrcnn.engine.evaluate_checks import check_evaluation
from maskrcnn.input_checks import OptionError, one_line


def evaluate_command(
    config_path: str | None,
    weights: str | None,
    annotation_json: str | None = None,
    image_dir: str | None = None,
    out_dir: str | None = None,
    results_file: str | None = None,
    vis: int = 0,
    overrides: list[str] = (),
    device: str = "auto",
    precision: str = "fp32",
    oks_sigmas: tuple[float, ...] | None = None,
) -> int:
    """Returns the exit code: 0 evaluated, 2 bad input (printed as one `error:` line).

    oks_sigmas: one per keypoint for keypoint AP (`--oks-sigmas`); None: the model's
    `model.keypoint_head.oks_sigmas` (with --results the config's), else COCO's person sigmas.

    The config, the paths and the options are checked before anything is read or built.
    Under torchrun (`torchrun --nproc_per_node N -m maskrcnn eval ...`) every process runs
    this: each predicts its share of the images; rank 0 alone prints and writes files.
    """
    try:
        config, paths = check_evaluation(
            config_path, overrides, weights, annotation_json, image_dir, out_dir, results_file, vis
        )
    except (ConfigError, OptionError) as error:
        if os.environ.get("RANK", "0") == "0":  # every process has the same problem: one line
            print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    explicit = paths.explicit or {}
    if "device" in explicit:  # `device=...` in the file or the overrides, as --device
        if device not in ("auto", config.device):
            message = f"--device {device} and device={config.device} ({explicit['device']}): give one"
            if os.environ.get("RANK", "0") == "0":
                print(f"error: {message}", file=sys.stderr)
            return 2
        device = config.device
    from maskrcnn.engine.evaluate_run import run_evaluation

    return run_evaluation(config, paths, weights, results_file, vis, device, precision, oks_sigmas)
