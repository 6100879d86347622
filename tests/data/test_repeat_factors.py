"""Repeat-factor sampling (LVIS): factors from a hand-made class histogram, and a sampler that
repeats images by them, the same way after a resume."""

import math

import pytest
import torch

from maskrcnn.data.repeat_factors import epoch_indices, repeat_factors
from maskrcnn.data.samplers import TrainingBatchSampler


def test_repeat_factors_of_a_hand_made_histogram():
    # 10 images: class 1 in all, class 2 in one (f = 0.1), class 3 in four (f = 0.4), one empty
    labels = [[1]] * 5 + [[1, 2]] + [[1, 3, 3]] * 3 + [[3]]
    labels[4] = []
    factors = repeat_factors(labels, threshold=0.5)
    # class 1: f = 0.9 -> 1; class 2: sqrt(0.5 / 0.1) = 2.236; class 3: sqrt(0.5 / 0.4) = 1.118
    assert factors[:4] == [1.0] * 4 and factors[4] == 1.0
    assert factors[5] == pytest.approx(math.sqrt(5))
    assert factors[6:] == [pytest.approx(math.sqrt(1.25))] * 4
    assert repeat_factors(labels, threshold=0.0) == [1.0] * 10


def test_an_epoch_repeats_each_image_by_its_factor_on_average():
    factors = [1.0, 2.236, 1.118, 3.0]
    counts = torch.zeros(4)
    epochs = 2000
    for epoch in range(epochs):
        indices = epoch_indices(factors, torch.Generator().manual_seed(epoch))
        counts += torch.bincount(torch.tensor(indices), minlength=4)
    assert (counts / epochs).tolist() == pytest.approx(factors, abs=0.03)


def test_the_sampler_repeats_rare_images_and_resumes_exactly():
    factors = [1.0] * 9 + [4.0]
    sampler = TrainingBatchSampler([1.0] * 10, 2, seed=3, repeat_factors=factors)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(130)]  # 20 epochs of 13 images
    seen = [index for batch in batches for index, _ in batch]
    share = seen.count(9) / len(seen)
    assert share == pytest.approx(4 / 13, abs=0.03)
    resumed = iter(TrainingBatchSampler([1.0] * 10, 2, seed=3, start_iter=100, repeat_factors=factors))
    assert [next(resumed) for _ in range(30)] == batches[100:]
    with pytest.raises(ValueError, match="2 repeat factors for 10 images"):
        TrainingBatchSampler([1.0] * 10, 2, seed=3, repeat_factors=[1.0, 2.0])
