"""The run's log: metrics.jsonl (and TensorBoard), the progress line or bar, and the loss
curves at the end."""

from maskrcnn.engine import distributed
from maskrcnn.engine.curves import CURVES_FILE, plot_curves
from maskrcnn.engine.hooks.base import HookBase


class MetricsLogger(HookBase):
    """Every `log_period` iterations and at the last one: the losses (averaged over the
    processes), the learning rate and the step's times into metrics.jsonl, and the progress
    line; loss_curves.png (with the evaluations) when the run ends."""

    def __init__(self, log_period: int, budget=None):
        self.log_period = log_period
        self.budget = budget  # a BudgetFit: the progress line shows the budget left

    def after_step(self, trainer) -> None:
        if trainer.iteration % self.log_period == 0 or not trainer.go_on:
            values = distributed.all_reduce_mean(
                {**trainer.losses, "loss": trainer.loss}, trainer.run.context
            )
            record = {"iteration": trainer.iteration, "lr": trainer.lr, **values}
            record.update(time=trainer.timer() - trainer.step_started, data_time=trainer.data_seconds)
            trainer.log.write(record)
            left = self.budget.budget_left() if self.budget is not None else (None, None)
            trainer.progress.log(trainer.iteration, values, trainer.lr, *left)
        trainer.progress.step()

    def after_train(self, trainer) -> None:
        if trainer.run.context.is_main:
            plot_curves(trainer.log.path, trainer.run.output_dir / CURVES_FILE)
