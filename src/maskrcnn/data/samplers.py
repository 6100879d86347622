"""Batches for training: deterministic from the seed, resumable at any iteration, sharded over processes."""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from maskrcnn.data.repeat_factors import epoch_indices


class TrainingBatchSampler(Sampler):
    """An endless stream of batches of (image index, augmentation seed) pairs.

    Each epoch is a permutation drawn from (seed, epoch). With aspect-ratio grouping,
    landscape and portrait images are batched separately so that padding stays small.
    Every process of a distributed run walks the same global stream (global batch =
    images_per_batch x world_size) and takes its own slice, and batch i is the same
    whether the run started at 0 or resumed at i: exact resume needs nothing else.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[float],
        images_per_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        group_by_aspect_ratio: bool = True,
        start_iter: int = 0,
        repeat_factors: Sequence[float] | None = None,
    ):
        if len(aspect_ratios) == 0:
            raise ValueError("the training set has no images")
        self.groups = [int(r >= 1.0) if group_by_aspect_ratio else 0 for r in aspect_ratios]
        self.images_per_batch = images_per_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter
        # None: each image once per epoch; else data.repeat_factors' r_i of each image
        self.repeat_factors = None if repeat_factors is None else list(repeat_factors)
        if self.repeat_factors is not None and len(self.repeat_factors) != len(self.groups):
            raise ValueError(f"{len(self.repeat_factors)} repeat factors for {len(self.groups)} images")

    def global_batches(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.images_per_batch * self.world_size
        buffers: dict[int, list[tuple[int, int]]] = {}
        drawn = 0
        epoch = 0
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            for index in self._epoch(generator):
                # A distinct augmentation seed for every draw of every image.
                sample = (index, (self.seed % (1 << 31)) * (1 << 31) + drawn)
                drawn += 1
                buffer = buffers.setdefault(self.groups[index], [])
                buffer.append(sample)
                if len(buffer) == global_batch:
                    yield list(buffer)
                    buffer.clear()
            epoch += 1

    def _epoch(self, generator: torch.Generator) -> list[int]:
        """One epoch's image indices in order: a permutation, of the repeated list with
        repeat factors."""
        if self.repeat_factors is None:
            return torch.randperm(len(self.groups), generator=generator).tolist()
        indices = epoch_indices(self.repeat_factors, generator)
        return [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        begin = self.rank * self.images_per_batch
        for iteration, batch in enumerate(self.global_batches()):
            if iteration >= self.start_iter:
                yield batch[begin : begin + self.images_per_batch]
