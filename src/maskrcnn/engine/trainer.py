"""The training loop: SGD with warm-up and step decay, exact resume, DDP, clean interruption."""

import contextlib
import itertools
import math
import random
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.config import SolverConfig, TrainConfig, config_to_dict
from maskrcnn.data.coco import CocoDataset, collate
from maskrcnn.data.image_cache import fill_image_cache, memory_limit_bytes
from maskrcnn.data.samplers import TrainingBatchSampler
from maskrcnn.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestSide
from maskrcnn.engine import distributed
from maskrcnn.engine.budget import Budget, EndCost, end_images, process_seconds
from maskrcnn.engine.evaluation import (
    IOU_TYPES,
    KEYPOINTS,
    evaluate_results,
    format_metrics,
    plot_precision_recall,
    predict_split,
    write_metrics,
)
from maskrcnn.engine.keypoints import keypoint_head_for_dataset, resolve_oks_sigmas
from maskrcnn.engine.metrics import MetricsLog, plot_losses
from maskrcnn.engine.progress import TrainingProgress
from maskrcnn.engine.schedule import Schedule
from maskrcnn.engine.stop import (
    Interrupted,
    StopRequest,
    ignore_stop_signals,
    shut_down_workers,
    signal_name,
)
from maskrcnn.interop.init_weights import load_initial_weights
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN, build_model, upgrade_state_dict
from maskrcnn.precision import autocast_context, autocast_dtype

LAST_CHECKPOINT = "last.pt"
FINAL_CHECKPOINT = "model_final.pt"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class _LossesOnly(torch.nn.Module):
    """Wraps the model so that DDP synchronises the gradients of `losses`."""

    def __init__(self, model: MaskRCNN):
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.losses(images, targets)


def build_training_data(config: TrainConfig, context: distributed.Context, start_iter: int):
    data = config.data
    dataset = CocoDataset(
        data.train_json,
        data.train_images,
        drop_images_without_annotations=data.drop_images_without_annotations,
        skip_bad_images=data.skip_bad_images,
        input_config=config.model.input,
        max_image_pixels=data.max_image_pixels,
        keypoints=config.model.keypoints,
        masks=config.model.masks,
    )
    _check_instances(dataset, config, context)
    # The flip swaps left and right keypoints by their names, which only the file knows.
    keypoint_flip = dataset.keypoint_flip if dataset.has_keypoints else None
    dataset.transform = Compose(
        [
            ResizeShortestSide(
                tuple(data.min_sizes_train), data.max_size_train, config.model.input.resize_rounding
            ),
            RandomHorizontalFlip(data.flip_probability, keypoint_flip),
        ]
    )
    if data.cache_images:  # before the workers start: they share the decoded images
        message = fill_image_cache(dataset, memory_limit_bytes(data.cache_images_max_mb))
        if context.is_main:
            tqdm.write(message)
    sampler = TrainingBatchSampler(
        dataset.aspect_ratios,
        data.images_per_batch,
        config.seed,
        context.rank,
        context.world_size,
        data.group_by_aspect_ratio,
        start_iter,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=data.num_workers,
        collate_fn=collate,
        persistent_workers=data.num_workers > 0,
        worker_init_fn=ignore_stop_signals,
    )
    return dataset, loader


def _check_instances(dataset: CocoDataset, config: TrainConfig, context) -> None:
    """Refuse a training split with nothing to learn (every annotation dropped: say how many and
    why); say when a box-only model trains on annotations kept by their boxes."""
    instances = sum(len(record.instances) for record in dataset.records)
    if instances == 0:
        why = dataset.drop_summary or "it has no annotation"
        need = "masks: polygons or RLE" if config.model.masks else "boxes"
        hint = (
            " (or model.masks=false to train boxes only)"
            if config.model.masks and "segmentation" in why
            else ""
        )
        raise ValueError(
            f"{config.data.train_json}: no usable instance to train on ({why}); the model needs {need}{hint}"
        )
    if not config.model.masks and context.is_main:
        tqdm.write(
            f"model.masks false: training boxes only, on {instances} instances of {config.data.train_json}"
        )


def make_optimizer(
    parameters: list[torch.nn.Parameter], solver: SolverConfig, loss_scaling: bool = False
) -> torch.optim.SGD:
    """SGD with momentum and weight decay (the paper's 0.9 and 1e-4 by default).

    PyTorch's fused kernel updates all parameters in one pass, without a chain of small
    per-parameter operations: 1.9 vs 5.6 ms per step for the shapes model on the CPU.
    With loss scaling (float16) the update is the plain one: when the first scaled step
    overflows, the fused kernel skips it but keeps momentum buffers it never initialised.
    """
    optimizer = torch.optim.SGD(
        parameters, lr=solver.base_lr, momentum=solver.momentum, weight_decay=solver.weight_decay
    )
    use_fused_sgd(optimizer, loss_scaling)
    return optimizer


def use_fused_sgd(optimizer: torch.optim.SGD, loss_scaling: bool) -> None:
    """Choose the fused update where it is safe; also after `load_state_dict`, which
    restores the choice saved in the checkpoint's parameter groups."""
    for group in optimizer.param_groups:
        on_supported_device = all(p.device.type in ("cpu", "cuda") for p in group["params"])
        group["fused"] = True if on_supported_device and not loss_scaling else None


def rng_state() -> dict:
    """Every RNG the training step draws from, in types `torch.load(weights_only=True)` reads."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> MaskRCNN:
    """Train Mask R-CNN as `config` says; returns the trained model (on every process).

    An output directory that holds a run is continued with resume=True or replaced with
    overwrite=True (its run files are removed first); otherwise ValueError, so that a
    second run never mixes its logs and checkpoints into the first one's.

    SIGINT, SIGTERM or SIGUSR1 (to this process or its whole process group, DataLoader
    workers included) end the run after the current iteration: last.pt is saved and
    `engine.stop.Interrupted` is raised, carrying the signal (exit code 128 + its number).
    """
    context = distributed.setup(config.device)
    try:
        with contextlib.ExitStack() as cleanup:
            return _train(config, resume, overwrite, context, cleanup)
    finally:
        distributed.teardown(context)


# What a run writes into its output directory; a folder holding any of the first three holds a run.
RUN_FILES = (
    LAST_CHECKPOINT,
    FINAL_CHECKPOINT,
    "metrics.jsonl",
    "metrics.json",
    "loss_curves.png",
    "precision_recall.png",
)


def _clear_earlier_run(output_dir: Path, resume: bool, overwrite: bool, context) -> None:
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


def _train(
    config: TrainConfig,
    resume: bool,
    overwrite: bool,
    context: distributed.Context,
    cleanup: contextlib.ExitStack,
) -> MaskRCNN:
    started = time.monotonic() - process_seconds()  # a time budget covers the set-up too
    output_dir = Path(config.output_dir)
    last_path = output_dir / LAST_CHECKPOINT
    _clear_earlier_run(output_dir, resume, overwrite, context)
    checkpoint = None
    if resume and not last_path.exists():
        # Pre-empted before its first checkpoint (or never started): the same command again
        # starts it, as a job requeued with --resume expects.
        if context.is_main:
            tqdm.write(
                f"--resume: no {last_path} (stopped before its first checkpoint): starting from the beginning"
            )
        _clear_earlier_run(output_dir, resume=False, overwrite=True, context=context)
        resume = False
    if resume:
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=True)
        final = output_dir / FINAL_CHECKPOINT
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
            return load_model(final, device=context.device)
        if _length_passed(config, checkpoint):
            raise ValueError(
                f"{last_path}: the run stopped at iteration {checkpoint['iteration']}, past the "
                f"{config.solver.max_iter} iterations this command asks for; give a length past it to "
                "continue, or --overwrite to start over"
            )
    start_iter = checkpoint["iteration"] if checkpoint else 0
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    dataset, loader = build_training_data(config, context, start_iter)
    validation = validation_data(config)  # read now: a broken file fails before the first step
    # The number of classes and their names follow the training set.
    if config.model.num_classes != dataset.num_classes and context.is_main:
        tqdm.write(
            f"model.num_classes: {dataset.num_classes} from {config.data.train_json} "
            f"({dataset.num_classes - 1} categories and the background), not {config.model.num_classes}"
        )
    model_config = replace(
        config.model,
        num_classes=dataset.num_classes,
        class_names=tuple(dataset.class_names),
        category_ids=tuple(dataset.category_ids),
    )
    if config.model.keypoints:  # the keypoints, like the classes, follow the training set
        head = keypoint_head_for_dataset(config.model.keypoint_head, dataset, validation)
        if head.num_keypoints != config.model.keypoint_head.num_keypoints and context.is_main:
            tqdm.write(
                f"model.keypoint_head.num_keypoints: {head.num_keypoints} from {config.data.train_json} "
                f"({', '.join(head.names)}), not {config.model.keypoint_head.num_keypoints}"
            )
        if validation is not None:  # a run must not fail at its end for want of sigmas
            resolve_oks_sigmas(head.num_keypoints, configured=head.oks_sigmas)
        model_config = replace(model_config, keypoint_head=head)
    config = replace(config, model=model_config)
    model = build_model(model_config)
    if config.init_weights and checkpoint is None:
        load_initial_weights(model, config.init_weights)
    model.to(context.device).train()

    solver = config.solver
    parameters = [p for p in model.parameters() if p.requires_grad]
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none.
    autocast = autocast_dtype(solver.precision, context.device, "solver.precision")
    loss_scaling = autocast == torch.float16
    optimizer = make_optimizer(parameters, solver, loss_scaling)
    # Creating the loader's iterator draws a seed from the global RNG: do it before the
    # RNG state of a resumed run is restored, exactly as an uninterrupted run did.
    batches = iter(loader)
    cleanup.callback(shut_down_workers, batches)  # however the run ends
    if checkpoint is not None:
        model.load_state_dict(upgrade_state_dict(checkpoint["model"]))
        optimizer.load_state_dict(checkpoint["optimizer"])
        use_fused_sgd(optimizer, loss_scaling)
        states = checkpoint["rng"]
        set_rng_state(states[context.rank] if context.rank < len(states) else states[0])

    trainable = _LossesOnly(model)
    if context.distributed:
        trainable = DistributedDataParallel(
            trainable, device_ids=[context.device] if context.device.type == "cuda" else None
        )

    log = MetricsLog(output_dir, enabled=context.is_main, start_iteration=start_iter)

    def save(path: Path, iteration: int) -> None:
        states = _gather_rng_states(context)
        if context.is_main:
            began = time.monotonic()
            save_checkpoint(
                path,
                model,
                train_config=config_to_dict(config),
                optimizer=optimizer.state_dict(),
                iteration=iteration,
                rng=states,
                schedule_total=total,  # a run fitted to a budget resumes that fit
                **({"budget_spent": budget.elapsed(), "budget": budget.state_dict()} if budget else {}),
                # float16's loss scale and growth counter: a resumed run scales as this one would
                **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
            )
            if budget is not None:
                budget.end.saved(time.monotonic() - began)

    scaler = torch.amp.GradScaler(context.device.type, enabled=loss_scaling)
    if checkpoint is not None and loss_scaling and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    schedule = Schedule.from_solver(solver)
    budget = None
    if solver.budget_minutes > 0:
        budget = _make_budget(solver, schedule, model, validation, context, started, checkpoint)
    go_on, factor, total = _decide(budget, schedule, start_iter, context)
    progress = TrainingProgress(total, start_iter, enabled=context.is_main)
    iteration, stopping = start_iter, False
    # closing: an error's message must not be glued to the end of a half-drawn bar
    with StopRequest() as stop, contextlib.closing(progress):
        while go_on:
            started_step = time.perf_counter()
            images, targets = _to_device(next(batches), context.device)
            data_time = time.perf_counter() - started_step
            # The rate is a function of the iteration (of the training time spent, under a
            # budget) alone, so a resumed run follows it exactly. (A torch LR scheduler would
            # warn whenever float16 loss scaling skips a step.)
            lr = solver.base_lr * factor
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses, loss = _step(trainable, optimizer, scaler, parameters, images, targets, solver, iteration)
            iteration += 1
            if budget is not None:
                budget.after_step(iteration, time.perf_counter() - started_step, _batch_shape(images))
                progress.write(budget.plan_message(solver.budget_minutes))
            go_on, factor, total = _decide(budget, schedule, iteration, context)
            progress.set_total(total)

            if iteration % solver.log_period == 0 or not go_on:
                values = distributed.all_reduce_mean({**losses, "loss": loss}, context)
                record = {"iteration": iteration, "lr": lr, **values}
                record.update(time=time.perf_counter() - started_step, data_time=data_time)
                log.write(record)
                left = (budget.remaining(), budget.end_seconds()) if budget is not None else (None, None)
                progress.log(iteration, values, lr, *left)
            progress.step()

            if solver.eval_period and iteration % solver.eval_period == 0 and go_on:
                _evaluate(model, validation, config, log, iteration, context, final=False)
                model.train()

            stopping = _agree(stop.requested, context)
            if stopping or iteration % solver.checkpoint_period == 0:
                save(last_path, iteration)
            if stopping:
                break
    if stopping:
        log.close()
        signum = stop.signum or signal.SIGTERM  # a rank another rank's signal stopped
        raise Interrupted(
            signum,
            f"stopped by {signal_name(signum)} at iteration {iteration}: {last_path} saved; "
            "continue with --resume",
        )
    end_began, end_estimate = time.monotonic(), budget.end_seconds() if budget else None
    save(last_path, iteration)
    if context.is_main:
        # The final model alone (no optimizer state): what predict, eval and export load.
        save_checkpoint(output_dir / FINAL_CHECKPOINT, model, iteration=iteration)
        plot_losses(log.path, output_dir / "loss_curves.png")
    _evaluate(model, validation, config, log, iteration, context, final=True)
    if budget is not None and context.is_main:
        tqdm.write(
            f"budget {solver.budget_minutes:g} min: {iteration} iterations; the end took "
            f"{time.monotonic() - end_began:.0f} s (estimated {end_estimate:.0f} s); "
            f"{budget.elapsed():.0f} of {budget.seconds:.0f} s used",
            file=sys.stderr,  # beside the plan's lines
        )
    log.close()
    return model.eval()


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


def _to_device(batch, device: torch.device):
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, targets


def _step(trainable, optimizer, scaler, parameters, images, targets, solver: SolverConfig, iteration: int):
    """One optimizer step on a batch; returns the loss terms (float32) and their sum."""
    device = images[0].device
    with autocast_context(solver.precision, device, "solver.precision"):
        losses = trainable(images, targets)
    losses = {k: v.float() for k, v in losses.items()}
    total = sum(losses.values())
    _check_finite(total, losses, iteration)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if solver.clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, solver.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return losses, total


def _batch_shape(images: list[torch.Tensor]) -> tuple[int, int, int]:
    """What a step's cost depends on: the batch size and its padded size in 32-pixel cells
    (the first step of each such shape chooses kernels and allocates)."""
    return (len(images), *(-(-max(image.shape[dim] for image in images) // 32) for dim in (-2, -1)))


def _make_budget(solver, schedule, model, validation, context, started, checkpoint) -> Budget:
    """The fit of a run to `solver.budget_minutes`, continued from a resumed run's checkpoint,
    its end first timed before training starts."""
    # last.pt holds the weights and the optimizer's momentum: twice the parameters' bytes
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    images = end_images(len(validation) if validation is not None else 0, context.world_size)
    end = EndCost(images, checkpoint_bytes=2 * weights)
    # Rank 0 decides for every rank (`_decide`): only it times the end.
    timer = _end_timer(model, validation) if context.is_main else None
    budget = Budget(
        solver.budget_minutes * 60, time.monotonic, started, schedule, end, timer, solver.eval_period
    )
    if checkpoint is not None and "budget" in checkpoint:
        budget.load_state_dict(checkpoint["budget"])
    elif checkpoint is not None and "budget_spent" in checkpoint:  # a file of an earlier version
        budget.load_state_dict(
            {"spent": checkpoint["budget_spent"], "total": checkpoint.get("schedule_total", schedule.total)}
        )
    budget.time_end()
    return budget


def _end_timer(model: MaskRCNN, validation: CocoDataset | None, count: int = 2):
    """A function that runs the final evaluation's inference on the next `count` validation
    images (other ones each time) and returns how many it ran (None: no validation split)."""
    if validation is None or len(validation) == 0:
        return None
    cursor = itertools.count()

    def time_images() -> int:
        done = 0
        model.eval()
        with torch.no_grad():
            for _ in range(count):
                sample = validation[next(cursor) % len(validation)]
                if sample is not None:
                    model.predict([sample[0]], normalized=True, score_threshold=0.0)
                    done += 1
        model.train()
        return done

    return time_images


def _decide(budget: Budget | None, schedule: Schedule, iteration: int, context) -> tuple[bool, float, int]:
    """Whether to take another step, its learning-rate factor, and the run's (predicted) length;
    rank 0 decides for every rank (each rank's clock differs)."""
    if budget is None:
        return iteration < schedule.total, schedule.factor(iteration), schedule.total
    decision = torch.tensor(
        [float(not budget.finished()), budget.factor(iteration), float(budget.total)], dtype=torch.float64
    )
    if context.distributed:
        decision = decision.to(context.device)
        torch.distributed.broadcast(decision, src=0)
    go_on, factor, total = decision.tolist()
    return bool(go_on), factor, max(int(total), iteration)


def validation_data(config: TrainConfig) -> CocoDataset | None:
    """The validation split (None without data.val_json), cleaned as the training split is.

    Raises ValueError naming the file or folder if it is missing or broken.
    """
    data = config.data
    if not data.val_json:
        return None
    if data.val_images and not Path(data.val_images).is_dir():
        raise ValueError(f"{data.val_images}: validation image folder not found (data.val_images)")
    return CocoDataset(
        data.val_json,
        data.val_images,
        skip_bad_images=data.skip_bad_images,
        input_config=config.model.input,
        max_image_pixels=data.max_image_pixels,
        keypoints=config.model.keypoints,
        masks=config.model.masks,
    )


def _evaluate(
    model: MaskRCNN,
    validation: CocoDataset | None,
    config: TrainConfig,
    log: MetricsLog,
    iteration: int,
    context: distributed.Context,
    final: bool,
) -> None:
    """COCO AP on the validation split: every process predicts its share of the images,
    rank 0 gathers them and scores them against the split's cleaned annotations."""
    if validation is None:
        return
    results = predict_split(model.eval(), validation, context, progress=False)
    if not context.is_main:
        return
    sigmas = None
    if config.model.keypoints:  # checked before the first step: this does not fail
        head = config.model.keypoint_head
        sigmas = resolve_oks_sigmas(head.num_keypoints, configured=head.oks_sigmas)
    metrics, evaluations = evaluate_results(validation, results, oks_sigmas=sigmas)
    scored = [t for t in (*IOU_TYPES, KEYPOINTS) if t in metrics]
    log.write({"iteration": iteration, **{f"{t}_{k}": v for t in scored for k, v in metrics[t].items()}})
    box_ap, mask_ap = 100 * metrics["bbox"]["AP"], 100 * metrics["segm"]["AP"]
    keypoint_ap = f", keypoint AP {100 * metrics[KEYPOINTS]['AP']:.1f}" if KEYPOINTS in metrics else ""
    tqdm.write(f"iteration {iteration}: box AP {box_ap:.1f}, mask AP {mask_ap:.1f}{keypoint_ap}")
    if final:
        tqdm.write(format_metrics(metrics))
        write_metrics(metrics, Path(config.output_dir) / "metrics.json")
        names = dict(zip(validation.category_ids, validation.class_names[1:]))
        plot_precision_recall(evaluations, names, Path(config.output_dir) / "precision_recall.png")


def _check_finite(total: torch.Tensor, losses: dict[str, torch.Tensor], iteration: int) -> None:
    # One host sync per iteration; the terms are inspected only to name the culprit.
    if math.isfinite(total.item()):
        return
    for name, value in losses.items():
        if not math.isfinite(value.item()):
            raise NonFiniteLossError(
                f"iteration {iteration + 1}: loss term {name} is {value.item()}; training stopped, "
                "the last checkpoint is kept (lower solver.base_lr or set solver.clip_grad_norm)"
            )


def _agree(flag: bool, context: distributed.Context) -> bool:
    """True on every process when any process was asked to stop."""
    if not context.distributed:
        return flag
    value = torch.tensor([float(flag)], device=context.device)
    torch.distributed.all_reduce(value)
    return bool(value.item() > 0)


def _gather_rng_states(context: distributed.Context) -> list:
    state = rng_state()
    if not context.distributed:
        return [state]
    states = [None] * context.world_size
    torch.distributed.all_gather_object(states, state)
    return states
