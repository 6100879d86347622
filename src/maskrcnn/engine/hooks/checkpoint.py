"""last.pt every `solver.checkpoint_period` iterations, when a signal stops the run, and at
its end; model_final.pt (the model alone, what predict, eval and export load) at its end."""

from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.config import config_to_dict
from maskrcnn.engine.hooks.base import HookBase
from maskrcnn.engine.rng import gather_rng_states
from maskrcnn.engine.run_folder import FINAL_CHECKPOINT, LAST_CHECKPOINT


class Checkpointer(HookBase):
    """Writes last.pt (weights, optimizer, generators, loss scale, iteration and what each
    hook adds: the budget's fit, the schedule's length) atomically, on rank 0; times each save
    (`trainer.last_save_seconds`: the budget counts it into the end's cost)."""

    def __init__(self, checkpoint_period: int):
        self.checkpoint_period = checkpoint_period

    def after_step(self, trainer) -> None:
        if trainer.stopping or trainer.iteration % self.checkpoint_period == 0:
            self.save(trainer)

    def after_train(self, trainer) -> None:
        self.save(trainer)
        if trainer.run.context.is_main:
            final = trainer.run.output_dir / FINAL_CHECKPOINT
            save_checkpoint(final, trainer.run.model, iteration=trainer.iteration)

    def save(self, trainer) -> None:
        run = trainer.run
        states = gather_rng_states(run.context)  # every rank takes part
        if not run.context.is_main:
            return
        began = trainer.now()
        extra = {}
        for hook in trainer.hooks:
            extra.update(hook.checkpoint_state(trainer))
        if run.scaler.is_enabled():  # float16's loss scale and growth counter
            extra["scaler"] = run.scaler.state_dict()
        save_checkpoint(
            run.output_dir / LAST_CHECKPOINT,
            run.model,
            train_config=config_to_dict(run.config),
            optimizer=run.optimizer.state_dict(),
            iteration=trainer.iteration,
            rng=states,
            **extra,
        )
        trainer.saves += 1
        trainer.last_save_seconds = trainer.now() - began
