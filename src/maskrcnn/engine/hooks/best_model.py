"""model_best.pt, the model of the evaluation with the best `solver.best_metric`, and patience:
a run that stops improving stops."""

import math

from tqdm import tqdm

from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.choices import VALIDATION_LOSS
from maskrcnn.engine.hooks.base import HookBase
from maskrcnn.engine.metrics import read_metrics
from maskrcnn.engine.run_folder import BEST_CHECKPOINT

# An evaluation's record in metrics.jsonl holds these (a log period's holds the losses).
EVALUATION_KEYS = ("val_loss", "bbox_", "segm_", "keypoints_")


class BestModel(HookBase):
    """After every evaluation (rank 0): a better `metric` than every earlier evaluation's saves
    the model as model_best.pt (atomically: the model alone, as model_final.pt), and
    `patience` evaluations in a row without one end the run (`trainer.stop_reason`); the
    final evaluation competes too. A resumed run counts on from the evaluations its log
    (metrics.jsonl, cut at the checkpoint) holds, the last run's final one included, or else
    from the state last.pt carries (the best value, its iteration, the evaluations since).

    metric: a figure of the evaluation's record ("segm_AP", "bbox_AP50", "val_loss", ...);
    higher is better, except for the validation loss. An evaluation without the figure (NaN:
    no object of the kind in the split) is no improvement.
    """

    def __init__(self, metric: str, patience: int = 0):
        self.metric, self.patience = metric, patience
        self.lower_is_better = metric == VALIDATION_LOSS
        self.value: float | None = None
        self.iteration: int | None = None
        self.since = 0  # evaluations since the best one
        self.seen: int | None = None  # the iteration of the last evaluation counted

    def before_train(self, trainer) -> None:
        if trainer.run.checkpoint is None or not trainer.run.context.is_main:
            return
        logged = read_metrics(trainer.log.path) if trainer.log.path.exists() else []
        evaluations = [r for r in logged if any(k.startswith(EVALUATION_KEYS) for k in r)]
        for record in evaluations:
            self._consider(record.get(self.metric), record["iteration"])
        state = trainer.run.checkpoint.get("best_model")
        if not evaluations and state and state.get("metric") == self.metric:
            self.value, self.iteration, self.since = state["value"], state["iteration"], state["since"]
        trainer.best = self.summary()

    def _consider(self, value: float | None, iteration: int) -> bool:
        """Count an evaluation; True when it is the best so far. A second look at the same
        iteration (the final evaluation reusing the last periodic one) counts for nothing."""
        if iteration == self.seen:
            return False
        self.seen = iteration
        usable = value is not None and math.isfinite(value)
        if usable and (self.value is None or self._better(value, self.value)):
            self.value, self.iteration, self.since = value, iteration, 0
            return True
        self.since += 1
        return False

    def after_evaluation(self, trainer, record: dict, final: bool) -> None:
        value = record.get(self.metric)
        if self._consider(value, trainer.iteration):
            save_checkpoint(
                trainer.run.output_dir / BEST_CHECKPOINT,
                trainer.run.model,
                iteration=trainer.iteration,
                best_metric={"name": self.metric, "value": value},
            )
        trainer.best = self.summary()
        if not final and self.patience and self.since >= self.patience:
            trainer.stop_reason = (
                f"stopped early at iteration {trainer.iteration}: {self.since} evaluations without a "
                f"better {self.metric} (solver.patience {self.patience}); the best, "
                f"{self._shown(self.value)} at iteration {self.iteration}, is in {BEST_CHECKPOINT}"
            )
        if final and self.iteration is not None:
            tqdm.write(
                f"best {self.metric} {self._shown(self.value)} at iteration {self.iteration}: "
                f"{trainer.run.output_dir / BEST_CHECKPOINT}"
            )

    def checkpoint_state(self, trainer) -> dict:
        if self.iteration is None:
            return {}
        state = {"metric": self.metric, "value": self.value, "iteration": self.iteration, "since": self.since}
        return {"best_model": state}

    def summary(self) -> dict | None:
        """{"metric", "value", "iteration", "file"} of the best evaluation so far (None: none yet)."""
        if self.iteration is None:
            return None
        return {
            "metric": self.metric,
            "value": self.value,
            "iteration": self.iteration,
            "file": BEST_CHECKPOINT,
        }

    def _better(self, value: float, best: float) -> bool:
        return value < best if self.lower_is_better else value > best

    def _shown(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if self.lower_is_better else f"{100 * value:.1f}"
