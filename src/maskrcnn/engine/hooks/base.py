"""The hook contract."""


class HookBase:
    """A hook sees the trainer (`engine.trainer.Trainer`): its `run` (model, optimizer, config,
    context, validation split), `iteration` (steps done), and after a step `losses` (name ->
    float32 scalar tensor), `loss` (their sum), `lr`, `step_seconds`, `go_on` (another step
    follows) and `total` (the run's length, predicted under a time budget). Each method does
    nothing unless a hook overrides it."""

    def before_train(self, trainer) -> None:
        """Before the first step (of this process: a resumed run continues at trainer.iteration)."""

    def after_step(self, trainer) -> None:
        """After each step."""

    def after_evaluation(self, trainer, metrics: dict, final: bool) -> None:
        """After the validation split was scored: metrics as `evaluate_results` gives them
        ({"bbox": {"AP": ...}, "segm": ..., ...}); final: the end-of-run evaluation. Rank 0 only."""

    def after_train(self, trainer) -> None:
        """After the last step of a run that ended (not stopped by a signal), in reverse order."""

    def checkpoint_state(self, trainer) -> dict:
        """Entries this hook adds to last.pt (a resumed run's hook reads them back)."""
        return {}

    def close(self, trainer) -> None:
        """However the run ended (an error, a signal, the end), in reverse order."""
