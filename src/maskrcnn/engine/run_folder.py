"""A run's output folder: what a run writes there, and whether a new command starts, replaces
or continues (--resume) the run it holds."""

import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from maskrcnn.config import TrainConfig
from maskrcnn.engine import distributed
from maskrcnn.engine.curves import CURVES_FILE
from maskrcnn.engine.metrics import RESULTS_FILE
from maskrcnn.evaluation.confusion import CONFUSION_JSON, CONFUSION_PLOT
from maskrcnn.evaluation.reports import METRICS_FILE, PR_PLOT_FILE

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
    is refused.
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
    checkpoint = torch.load(last_path, map_location="cpu", weights_only=True)
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
    iteration (a run that died after an earlier checkpoint did not, whatever files it left)."""
    if not final.exists():
        return False
    saved = torch.load(final, map_location="cpu", weights_only=True, mmap=True)
    return saved.get("iteration") == checkpoint["iteration"]


def _length_passed(config: TrainConfig, checkpoint: dict) -> bool:
    """A fixed-length run resumed with fewer iterations than it has already trained."""
    return config.solver.budget_minutes <= 0 and checkpoint["iteration"] >= config.solver.max_iter
