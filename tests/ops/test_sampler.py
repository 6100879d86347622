"""Balanced sampling with nothing, or nothing of one kind, to sample."""

import torch

from maskrcnn.ops.sampler import BalancedSampler


def test_no_predictions_sample_nothing():
    positive, negative = BalancedSampler(256, 0.25)(torch.zeros(0, dtype=torch.int64))
    for indices in (positive, negative):
        assert indices.shape == (0,)
        assert indices.dtype == torch.int64


def test_no_ground_truth_fills_the_batch_with_negatives():
    """An image without objects: every label is background, and the batch is all negatives."""
    labels = torch.zeros(300, dtype=torch.int64)
    positive, negative = BalancedSampler(256, 0.25)(labels)
    assert positive.shape == (0,)
    assert negative.shape == (256,)
    assert negative.unique().numel() == 256
    assert (labels[negative] == 0).all()
    # Fewer negatives than the batch: all of them, once each.
    positive, negative = BalancedSampler(256, 0.25)(labels[:40].float())
    assert positive.numel() == 0
    assert sorted(negative.tolist()) == list(range(40))


def test_only_ignored_labels_sample_nothing():
    positive, negative = BalancedSampler(256, 0.5)(torch.full((50,), -1.0))
    assert positive.numel() == 0
    assert negative.numel() == 0
