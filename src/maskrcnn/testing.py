"""Helpers for comparing detections: this project with torchvision, eager with exported."""

import torch


def randomize_for_parity(model: torch.nn.Module, seed: int = 1234) -> None:
    """Give a randomly initialised torchvision Mask R-CNN weights that produce detections.

    Fresh BatchNorm statistics are the identity and fresh class scores are nearly uniform
    (no class passes the 0.05 threshold), so both are drawn at random: a comparison then
    covers every stage, with varied labels and masks that cover a good share of their
    boxes. BatchNorm eps is set to 0 as in torchvision's COCO checkpoints.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = 0.0
                module.running_mean.copy_(uniform(module.num_features, -0.1, 0.1))
                module.running_var.copy_(uniform(module.num_features, 0.5, 1.5))
                module.weight.copy_(uniform(module.num_features, 0.5, 1.0))
                module.bias.copy_(uniform(module.num_features, -0.1, 0.1))
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.normal_(0, 1.0, generator=generator)
        predictor.cls_score.bias.normal_(0, 1.0, generator=generator)
        predictor.bbox_pred.weight.normal_(0, 0.1, generator=generator)
        if getattr(model.roi_heads, "mask_predictor", None) is not None:
            mask_logits = model.roi_heads.mask_predictor.mask_fcn_logits
            mask_logits.weight.normal_(0, 0.3, generator=generator)
            mask_logits.bias.fill_(0.3)


def frozen_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every nn.BatchNorm2d replaced by torchvision's FrozenBatchNorm2d of the same
    statistics, parameters and eps: the model torchvision builds with pre-trained weights, whose
    state dict has no `num_batches_tracked` (which says BatchNorm eps 1e-5 to `from_torchvision`)."""
    from torchvision.ops import FrozenBatchNorm2d

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(parent, name, frozen)
    return model


def torchvision_reference_model(seed: int = 0) -> torch.nn.Module:
    """torchvision's maskrcnn_resnet50_fpn in eval mode with random informative weights, its
    BatchNorm frozen with eps 0 as in the COCO_V1 checkpoint."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(seed)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    randomize_for_parity(model)
    return frozen_batchnorm(model)


def torchvision_keypoint_model(seed: int = 0) -> torch.nn.Module:
    """torchvision's keypointrcnn_resnet50_fpn in eval mode with random informative weights, its
    BatchNorm frozen with eps 0 as in the COCO_V1 checkpoint."""
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    torch.manual_seed(seed)
    model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    randomize_for_parity(model)
    return frozen_batchnorm(model)


def tiny_model_config(
    class_names: tuple[str, ...] = ("__background__", "a", "b"),
    category_ids: tuple[int, ...] = (),
    min_size: int = 64,
    max_size: int = 96,
    detections_per_image: int = 20,
):
    """A narrow Mask R-CNN (one block per stage, 16-channel FPN and heads) that builds, saves
    and runs in moments: for tests of what surrounds the model, not of its accuracy.

    Random weights score every class about equally, so the score threshold is 0 (every
    image gets detections) and their number is capped.
    """
    from maskrcnn.config import BackboneConfig, InputConfig, ModelConfig, RoIHeadsConfig

    return ModelConfig(
        num_classes=len(class_names),
        class_names=tuple(class_names),
        category_ids=tuple(category_ids),
        backbone=BackboneConfig(
            stage_blocks=(1, 1, 1, 1),
            stage_channels=(32, 64, 128, 256),
            stem_channels=16,
            width_per_group=8,
            norm="gn",
            freeze_at=0,
            fpn_channels=16,
        ),
        input=InputConfig(min_size=min_size, max_size=max_size),
        roi_heads=RoIHeadsConfig(
            fc_dim=64, mask_conv_dim=16, score_threshold=0.0, detections_per_image=detections_per_image
        ),
    )


def shapes_training_config(shapes, output, *overrides: str):
    """configs/shapes.yaml sized for a test: a shapes dataset folder `shapes` (from
    `make_shapes`), 128-176 px images, batches of 2 in the main process, logging every step."""
    from pathlib import Path

    from maskrcnn.config import load_config

    shapes = Path(shapes)
    from maskrcnn.builtin_configs import builtin_configs

    config = builtin_configs()["shapes"]  # the packaged file: an installed wheel has it too
    # large-scale jitter reads no training sizes (and refuses them)
    lsj = any(o.startswith("data.augment=lsj") for o in overrides)
    sizes = [] if lsj else ["data.min_sizes_train=[128]", "data.max_size_train=176"]
    return load_config(
        str(config),
        [
            f"data.train_json={shapes / 'annotations' / 'instances_train.json'}",
            f"data.train_images={shapes / 'train'}",
            f"data.val_json={shapes / 'annotations' / 'instances_val.json'}",
            f"data.val_images={shapes / 'val'}",
            f"output_dir={output}",
            "data.num_workers=0",
            "data.images_per_batch=2",
            *sizes,
            "solver.log_period=1",
            "solver.warmup_iters=2",
            "solver.base_lr=0.01",
            "device=cpu",
            *overrides,
        ],
    )


def randomize_norm(norm, seed: int = 0):
    """`norm` (a FrozenBatchNorm2d or BatchNorm2d) with random statistics and affine
    parameters, all away from 0 and 1; returned for chaining."""
    channels = norm.weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=generator))
        norm.running_mean.copy_(torch.randn(channels, generator=generator))
        norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return norm


def channels_last(*shape, seed: int) -> torch.Tensor:
    """Standard normal values of `shape` (N, C, H, W) in channels-last memory."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).contiguous(memory_format=torch.channels_last)
