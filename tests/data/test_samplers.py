import itertools

import pytest

from maskrcnn.data.samplers import TrainingBatchSampler


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_batches_group_aspect_ratios_and_cover_every_image():
    ratios = [1.5, 0.5] * 10
    batches = take(TrainingBatchSampler(ratios, 2, seed=0), 10)
    for batch in batches:
        assert len({ratios[i] >= 1 for i, _ in batch}) == 1
    assert {i for batch in batches for i, _ in batch} == set(range(20))


def test_resume_at_an_iteration_gives_the_same_batches():
    ratios = [1.2, 0.8, 1.0, 0.7, 1.9] * 7
    full = take(TrainingBatchSampler(ratios, 3, seed=5), 30)
    resumed = take(TrainingBatchSampler(ratios, 3, seed=5, start_iter=17), 13)
    assert resumed == full[17:]


def test_processes_split_each_global_batch():
    ratios = [1.3] * 16
    single = take(TrainingBatchSampler(ratios, 4, seed=1), 4)
    rank0 = take(TrainingBatchSampler(ratios, 2, seed=1, rank=0, world_size=2), 4)
    rank1 = take(TrainingBatchSampler(ratios, 2, seed=1, rank=1, world_size=2), 4)
    assert [a + b for a, b in zip(rank0, rank1)] == single


def test_augmentation_seeds_are_distinct_and_follow_the_seed():
    samples = [s for batch in take(TrainingBatchSampler([1.0] * 7, 2, seed=3), 20) for s in batch]
    assert len({seed for _, seed in samples}) == len(samples)
    other = [s for batch in take(TrainingBatchSampler([1.0] * 7, 2, seed=4), 20) for s in batch]
    assert samples != other


def test_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        TrainingBatchSampler([], 2, seed=0)
