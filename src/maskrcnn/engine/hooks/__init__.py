"""What the trainer does around its steps, one hook a job (detectron2's `HookBase` idea).

`Trainer.train` calls each hook's `before_train`, then after every step each hook's
`after_step` in the list's order; after an evaluation every hook's `after_evaluation`; when the
run has ended (not when a signal stopped it) each hook's `after_train` in reverse order (the
last set up is the first to finish); and, however the run ends, each hook's `close` in reverse
order. A user's own hook is one more object in `train(config, hooks=[...])`, called after the
trainer's own.
"""

from maskrcnn.engine.hooks.base import HookBase

__all__ = ["HookBase"]
