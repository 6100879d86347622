"""The validation split's evaluation (COCO AP and the validation loss): every
`solver.eval_period` iterations and at the end."""

from tqdm import tqdm

from maskrcnn.engine import distributed
from maskrcnn.engine.hooks.base import HookBase
from maskrcnn.engine.validation_loss import validation_loss
from maskrcnn.evaluation import reports
from maskrcnn.evaluation.coco import KEYPOINTS, evaluate_results, predict_split
from maskrcnn.evaluation.keypoints import resolve_oks_sigmas


class PeriodicEvaluation(HookBase):
    """Scores the model on the validation split every `trainer.eval_period` iterations (0: only
    at the end; a budget run's length hook may choose it) and when the run ends: the validation
    loss and the APs go into the log (metrics.jsonl, results.csv) as one record, and every hook
    hears of it (`after_evaluation`). A hook that sets `trainer.stop_reason` (patience) ends the
    run on every process. The final evaluation also prints the tables and writes the reports
    (metrics.json with per-class AP and the best model, precision_recall.png, the confusion
    matrix); when it falls on the iteration of the last periodic one, that one's figures are
    used again instead of predicting twice."""

    def __init__(self):
        self.last_iteration = None  # of the last evaluation
        self.last = None  # its (record, metrics, evaluations, results), on rank 0

    def after_step(self, trainer) -> None:
        period = trainer.eval_period
        if period and trainer.iteration % period == 0 and trainer.go_on and not trainer.stopping:
            self.evaluate(trainer, final=False)
            trainer.run.model.train()
            reason = distributed.from_main(trainer.stop_reason, trainer.run.context)
            if reason is not None:
                trainer.stop_reason, trainer.go_on = reason, False
                trainer.say(reason)

    def after_train(self, trainer) -> None:
        self.evaluate(trainer, final=True)

    def evaluate(self, trainer, final: bool) -> None:
        """Every process predicts and scores the loss of its share of the images; rank 0
        gathers them and scores AP against the split's cleaned annotations."""
        run = trainer.run
        if run.validation is None:
            return
        again = final and self.last_iteration == trainer.iteration
        scored = self.last if again else self._score(trainer)
        self.last_iteration, self.last = trainer.iteration, scored
        if not run.context.is_main:
            return
        record, metrics, evaluations, results = scored
        trainer.metrics = metrics
        if not again:
            trainer.log.write(record)
            tqdm.write(_summary_line(record))
        for hook in trainer.hooks:
            hook.after_evaluation(trainer, record, final)
        if final:
            tqdm.write(reports.format_metrics(metrics, _scored_types(run.config.model)))
            best = trainer.best
            extra = {"best": best} if best else None
            reports.write_reports(metrics, evaluations, results, run.validation, run.output_dir, extra=extra)

    def _score(self, trainer):
        run = trainer.run
        config, context, validation = run.config, run.context, run.validation
        losses = validation_loss(run.model, validation, config, context)
        results = predict_split(run.model.eval(), validation, context, progress=False)
        if not context.is_main:
            return None
        sigmas = None
        if config.model.keypoints:  # checked before the first step: this does not fail
            head = config.model.keypoint_head
            sigmas = resolve_oks_sigmas(head.num_keypoints, configured=head.oks_sigmas)
        metrics, evaluations = evaluate_results(validation, results, oks_sigmas=sigmas)
        scored = _scored_types(config.model)
        record = {
            "iteration": trainer.iteration,
            **losses,
            **{f"{t}_{k}": v for t in scored for k, v in metrics[t].items()},
        }
        return record, metrics, evaluations, results


def _scored_types(model) -> tuple[str, ...]:
    """What the model is scored by: boxes, and masks and keypoints when it predicts them."""
    return ("bbox",) + (("segm",) if model.masks else ()) + ((KEYPOINTS,) if model.keypoints else ())


SUMMARY = (("bbox_AP", "box AP"), ("segm_AP", "mask AP"), ("keypoints_AP", "keypoint AP"))


def _summary_line(record: dict) -> str:
    parts = [f"{name} {_percent(record[key])}" for key, name in SUMMARY if key in record]
    if "val_loss" in record:
        parts.append(f"validation loss {record['val_loss']:.4f}")
    return f"iteration {record['iteration']}: " + ", ".join(parts)


def _percent(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"
