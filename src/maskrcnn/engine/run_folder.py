"""A run's output folder: what a run writes there, and whether a new command starts, replaces
or continues (--resume) the run it holds."""

import shutil
from pathlib import Path

from tqdm import tqdm

from maskrcnn.checkpoint import is_checkpoint, model_config_of
from maskrcnn.config import ModelConfig, TrainConfig
from maskrcnn.engine import distributed
from maskrcnn.engine.curves import CURVES_FILE
from maskrcnn.engine.metrics import RESULTS_FILE
from maskrcnn.errors import one_line
from maskrcnn.evaluation.confusion import CONFUSION_JSON, CONFUSION_PLOT
from maskrcnn.evaluation.reports import METRICS_FILE, PR_PLOT_FILE
from maskrcnn.inference_settings import flat_model_config
from maskrcnn.interop.load import read_weights_file
from maskrcnn.interop.state_dicts import CheckpointError, load_strict
from maskrcnn.modeling.mask_rcnn import upgrade_state_dict

LAST_CHECKPOINT = "last.pt"
FINAL_CHECKPOINT = "model_final.pt"
BEST_CHECKPOINT = "model_best.pt"
# What a run writes into its output directory; a folder holding any of the first three holds a run.
RUN_FILES = (
    LAST_CHECKPOINT,
    FINAL_CHECKPOINT,
    "metrics.jsonl",
    BEST_CHECKPOINT,
    RESULTS_FILE,
    METRICS_FILE,
    CURVES_FILE,
    PR_PLOT_FILE,
    CONFUSION_JSON,
    CONFUSION_PLOT,
)


def clear_earlier_run(output_dir: Path, resume: bool, overwrite: bool, context) -> None:
    """Refuse to mix a new run into a folder holding one (ValueError) unless --resume continues
    it or --overwrite replaces it (its run files are removed first)."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one")
    found = [name for name in RUN_FILES[:3] if (output_dir / name).exists()]
    if resume or not found:
        return
    if not overwrite:
        raise ValueError(
            f"{output_dir}: holds a training run ({', '.join(found)}); continue it with --resume "
            "or replace it with --overwrite (or choose another --out)"
        )
    if context.is_main:
        for name in RUN_FILES:
            (output_dir / name).unlink(missing_ok=True)
        shutil.rmtree(output_dir / "tensorboard", ignore_errors=True)
    distributed.barrier(context)


def starting_point(
    config: TrainConfig, resume: bool, overwrite: bool, context
) -> tuple[dict | None, Path | None]:
    """Where this command starts: (the checkpoint it continues, None: the beginning; the
    final model of a run that is complete, which the command returns without training).

    --resume without last.pt (a job pre-empted before its first checkpoint and requeued with
    the same command) starts from the beginning, as detectron2's resume does. A complete run
    (model_final.pt at last.pt's iteration) stays complete under a budget (its schedule has
    ended) and under a fixed length it has reached; one that stopped past the length asked for
    is refused. A last.pt or model_final.pt it cannot read or continue from is a
    CheckpointError naming the file (`read_training_checkpoint`).
    """
    output_dir = Path(config.output_dir)
    last_path, final = output_dir / LAST_CHECKPOINT, output_dir / FINAL_CHECKPOINT
    clear_earlier_run(output_dir, resume, overwrite, context)
    if resume and not last_path.exists():
        if context.is_main:
            tqdm.write(
                f"--resume: no {last_path} (stopped before its first checkpoint): starting from the beginning"
            )
        clear_earlier_run(output_dir, resume=False, overwrite=True, context=context)
        return None, None
    if not resume:
        return None, None
    checkpoint = read_training_checkpoint(last_path)
    budgeted = config.solver.budget_minutes > 0
    if _is_complete(checkpoint, final) and (budgeted or _length_passed(config, checkpoint)):
        if context.is_main:
            # A budget's schedule has ended; a fixed one continues to a larger max_iter.
            how = "" if budgeted else "resume with a larger solver.max_iter (--max-iter), or "
            tqdm.write(
                f"{output_dir}: the run is complete ({FINAL_CHECKPOINT} at iteration "
                f"{checkpoint['iteration']}); nothing was written. To train longer, {how}start a new "
                f"run from its weights: --out NEW init_weights={final}"
            )
        return checkpoint, final
    if _length_passed(config, checkpoint):
        raise ValueError(
            f"{last_path}: the run stopped at iteration {checkpoint['iteration']}, past the "
            f"{config.solver.max_iter} iterations this command asks for; give a length past it to "
            "continue, or --overwrite to start over"
        )
    return checkpoint, None


def _is_complete(checkpoint: dict, final: Path) -> bool:
    """Whether the run whose last.pt this is ended: its model_final.pt written at the same
    iteration (a run that died after an earlier checkpoint did not, whatever files it left).
    A damaged model_final.pt is a CheckpointError naming it."""
    if not final.exists():
        return False
    saved = read_weights_file(final)
    return isinstance(saved, dict) and saved.get("iteration") == checkpoint["iteration"]


# What last.pt holds beside a model's weights and config (`hooks.checkpoint.Checkpointer`).
TRAINING_STATE = ("iteration", "optimizer", "rng")


def read_training_checkpoint(path: Path) -> dict:
    """A run's last.pt, read as every weights file is (`interop.load.read_weights_file`: a
    damaged, foreign or malicious file is a CheckpointError naming it), and refused unless it
    is a maskrcnn checkpoint with the training state --resume continues from."""
    payload = read_weights_file(path)
    if not is_checkpoint(payload):
        raise CheckpointError(
            f"{path}: not a maskrcnn training checkpoint (the {LAST_CHECKPOINT} a run writes), which "
            "--resume continues; start a new run (--overwrite, or another --out)"
        )
    missing = [key for key in TRAINING_STATE if key not in payload]
    if missing and isinstance(payload.get("model"), dict):
        raise CheckpointError(
            f"{path}: a maskrcnn model without the training state --resume continues from (no "
            f"{', '.join(missing)}: a {FINAL_CHECKPOINT} or {BEST_CHECKPOINT} copied over it?); start a "
            f"new run from its weights: --out NEW init_weights={path}"
        )
    iteration = payload.get("iteration")
    broken = [
        key
        for key, fine in (
            ("model", isinstance(payload.get("model"), dict)),
            ("optimizer", isinstance(payload.get("optimizer"), dict)),
            ("rng", isinstance(payload.get("rng"), list) and len(payload["rng"]) > 0),
            ("iteration", type(iteration) is int and iteration >= 0),
        )
        if not fine
    ]
    if broken:
        raise CheckpointError(
            f"{path}: a damaged maskrcnn training checkpoint (bad or no {', '.join(broken)})"
        )
    try:
        model_config_of(payload, str(path))
    except ValueError as error:
        raise CheckpointError(one_line(error)) from None
    return payload


def restore_training_state(model, optimizer, checkpoint: dict, config: TrainConfig) -> None:
    """The resumed run's weights into `model` and its optimizer state into `optimizer`. A
    checkpoint of another model (the training data's classes or the model's config changed
    since it was written) is a CheckpointError saying what changed."""
    path = Path(config.output_dir) / LAST_CHECKPOINT
    try:
        load_strict(model, upgrade_state_dict(checkpoint["model"]), str(path))
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as error:  # CheckpointError is a ValueError
        changed = _what_changed(model_config_of(checkpoint, str(path)), config.model)
        if not changed:
            problem = one_line(error).removeprefix(f"{path}: ")
            raise CheckpointError(f"{path}: does not fit this run's model and optimizer: {problem}") from None
        raise CheckpointError(
            f"{path}: {changed}: resume only the same run; start a new one from its weights with "
            f"--out NEW init_weights={path}"
        ) from None


def _what_changed(saved: ModelConfig, now: ModelConfig) -> str:
    """How the model config of a checkpoint differs from this run's, in a few words ('' if not)."""
    if saved.num_classes != now.num_classes:
        return (
            f"its model has {saved.num_classes} classes ({saved.num_classes - 1} categories and the "
            f"background), this run's training data {now.num_classes}"
        )
    before, after = flat_model_config(saved), flat_model_config(now)
    differing = [
        f"model.{key}: {before[key]!r} in the checkpoint, {after[key]!r} now"
        for key in before
        if key in after and before[key] != after[key]
    ]
    if not differing:
        return ""
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    return f"its model differs from this run's ({'; '.join(differing[:3])}{more})"


def _length_passed(config: TrainConfig, checkpoint: dict) -> bool:
    """A fixed-length run resumed with fewer iterations than it has already trained."""
    return config.solver.budget_minutes <= 0 and checkpoint["iteration"] >= config.solver.max_iter
