"""Dynamic batching: images that wait together share one forward pass, each request gets its
own image's detections at its own score threshold, a failing batch fails only its requests,
and stopping finishes what is queued.

The batches are made deterministic without clocks: the first forward pass is held at a gate
until the other requests are known to be queued (the queue-depth gauge), so the next pass
must take them together."""

import asyncio
import threading

import httpx
import numpy as np
import pytest
import torch
from serve_helpers import encoded, expected_answer, picture, tiny_model

from maskrcnn.box_masks import BoxMasks
from maskrcnn.data.images import to_image_tensor
from maskrcnn.serve.app import _model_runner, create_app
from maskrcnn.serve.batching import Batcher, BatcherStopped
from maskrcnn.serve.metrics import ServerMetrics
from maskrcnn.serve.responses import keep_scoring
from maskrcnn.serve.settings import ServeSettings

WAIT = 60  # seconds any wait below may take before the test fails (never reached when it works)


class GatedPredict:
    """A predict function that records each call and holds the first one until `release`."""

    def __init__(self, predict=None):
        self.calls = []  # (number of images, score threshold, tile)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.predict = predict or (
            lambda images, threshold, tile, overlap: [{"id": int(i[0, 0, 0])} for i in images]
        )

    def __call__(self, images, threshold, tile, overlap):
        self.calls.append((len(images), threshold, tile))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT)
        return self.predict(images, threshold, tile, overlap)


async def _until(condition):
    for _ in range(WAIT * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def _queued(metrics: ServerMetrics) -> float:
    return metrics.registry.get_sample_value("maskrcnn_queue_depth")


def _image(number: int, side: int = 2) -> torch.Tensor:
    return torch.full((1, side, side), float(number))


async def _first_held_then(batcher, gated, metrics, jobs):
    """Submit image 0, wait until its pass is held, queue `jobs` (kwargs of submit), release."""
    first = asyncio.ensure_future(batcher.submit(_image(0), 0.5))
    await asyncio.to_thread(gated.entered.wait, WAIT)
    rest = [asyncio.ensure_future(batcher.submit(**job)) for job in jobs]
    await _until(lambda: _queued(metrics) == len(jobs))
    gated.gate.set()
    return await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), WAIT)


@pytest.mark.parametrize("max_batch, expected_sizes", [(4, [1, 4, 1]), (3, [1, 3, 2]), (1, [1] * 6)])
def test_waiting_images_share_a_pass_of_at_most_max_batch(max_batch, expected_sizes):
    gated, metrics = GatedPredict(), ServerMetrics(max_batch)
    batcher = Batcher(gated, max_batch, max_wait_ms=0, metrics=metrics)

    async def run():
        batcher.start()
        try:
            jobs = [{"image": _image(n), "score_threshold": 0.5} for n in range(1, 6)]
            return await _first_held_then(batcher, gated, metrics, jobs)
        finally:
            batcher.stop()

    results = asyncio.run(run())
    assert [result.detections["id"] for result in results] == [0, 1, 2, 3, 4, 5]  # each its own
    assert [size for size, _, _ in gated.calls] == expected_sizes
    assert [result.batch_size for result in results[1:]][: expected_sizes[1]] == [
        expected_sizes[1]
    ] * expected_sizes[1]
    assert metrics.registry.get_sample_value("maskrcnn_batch_size_count") == len(expected_sizes)
    assert metrics.registry.get_sample_value("maskrcnn_batch_size_sum") == 6


def test_a_batch_runs_at_its_lowest_threshold_and_tiled_images_run_alone():
    gated, metrics = GatedPredict(), ServerMetrics(8)
    batcher = Batcher(gated, 8, max_wait_ms=0, metrics=metrics)
    jobs = [
        {"image": _image(1), "score_threshold": 0.7},
        {"image": _image(2), "score_threshold": 0.2},
        {"image": _image(3), "score_threshold": 0.5, "tile": 256, "tile_overlap": 32},
        {"image": _image(4), "score_threshold": 0.9},
    ]

    async def run():
        batcher.start()
        try:
            return await _first_held_then(batcher, gated, metrics, jobs)
        finally:
            batcher.stop()

    results = asyncio.run(run())
    assert [result.detections["id"] for result in results] == [0, 1, 2, 3, 4]
    # The tiled image waits for the pass of the others, then runs alone at its own threshold.
    assert gated.calls == [(1, 0.5, None), (3, 0.2, None), (1, 0.5, 256)]
    assert [result.batch_size for result in results] == [1, 3, 3, 1, 3]


def test_only_images_of_one_size_share_a_pass():
    gated, metrics = GatedPredict(), ServerMetrics(4)
    batcher = Batcher(gated, 4, max_wait_ms=0, metrics=metrics)
    sides = [2, 3, 2, 3, 2]
    jobs = [{"image": _image(n, side), "score_threshold": 0.5} for n, side in enumerate(sides, start=1)]

    async def run():
        batcher.start()
        try:
            return await _first_held_then(batcher, gated, metrics, jobs)
        finally:
            batcher.stop()

    results = asyncio.run(run())
    assert [result.detections["id"] for result in results] == [0, 1, 2, 3, 4, 5]
    assert [size for size, _, _ in gated.calls] == [1, 3, 2]  # 1, 3 and 5 (2 x 2); then 2 and 4
    assert [result.batch_size for result in results] == [1, 3, 2, 3, 2, 3]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    def predict(images, threshold, tile, overlap):
        if any(int(i[0, 0, 0]) == 2 for i in images):
            raise RuntimeError("the model broke")
        return [{"id": int(i[0, 0, 0])} for i in images]

    gated, metrics = GatedPredict(predict), ServerMetrics(2)
    batcher = Batcher(gated, 2, max_wait_ms=0, metrics=metrics)
    jobs = [{"image": _image(n), "score_threshold": 0.5} for n in (1, 2, 3, 4)]

    async def run():
        batcher.start()
        try:
            results = await _first_held_then(batcher, gated, metrics, jobs)
            later = await asyncio.wait_for(batcher.submit(_image(5), 0.5), WAIT)
            return results, later
        finally:
            batcher.stop()

    (first, one, two, three, four), later = asyncio.run(run())
    assert [size for size, _, _ in gated.calls] == [1, 2, 2, 1]
    assert first.detections == {"id": 0} and three.detections == {"id": 3} and four.detections == {"id": 4}
    assert isinstance(one, RuntimeError) and isinstance(two, RuntimeError)  # 1 and 2 shared the pass
    assert str(two) == "the model broke"
    assert later.detections == {"id": 5}


def test_stop_finishes_what_is_queued_and_refuses_more():
    gated, metrics = GatedPredict(), ServerMetrics(4)
    batcher = Batcher(gated, 4, max_wait_ms=0, metrics=metrics)

    async def run():
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_image(0), 0.5))
        await asyncio.to_thread(gated.entered.wait, WAIT)
        # Of two sizes: the second is set aside with the stop marker behind it, and still runs.
        queued = [asyncio.ensure_future(batcher.submit(_image(n, side=n + 1), 0.5)) for n in (1, 2)]
        await _until(lambda: _queued(metrics) == 2)
        stopping = asyncio.ensure_future(asyncio.to_thread(batcher.stop, WAIT))
        await _until(lambda: not batcher._accepting)
        with pytest.raises(BatcherStopped):
            await batcher.submit(_image(9), 0.5)
        gated.gate.set()
        await asyncio.wait_for(stopping, WAIT)
        return await asyncio.wait_for(asyncio.gather(first, *queued), WAIT)

    results = asyncio.run(run())
    assert [result.detections["id"] for result in results] == [0, 1, 2]
    assert not batcher._thread.is_alive()


def test_keep_scoring_filters_every_entry_alike():
    detections = {
        "boxes": torch.arange(12.0).reshape(3, 4),
        "scores": torch.tensor([0.9, 0.3, 0.6]),
        "labels": torch.tensor([1, 2, 1]),
        "masks": BoxMasks(
            [np.ones((1, 1), bool), np.ones((2, 2), bool), np.ones((3, 3), bool)], [(0, 0)] * 3, (4, 4)
        ),
        "keypoints": torch.arange(18.0).reshape(3, 2, 3),
    }
    kept = keep_scoring(detections, 0.5)
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.6])
    assert kept["labels"].tolist() == [1, 1]
    assert kept["boxes"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert [crop.shape for crop in kept["masks"].crops] == [(1, 1), (3, 3)]
    assert kept["keypoints"][1].tolist() == detections["keypoints"][2].tolist()


def _matches(answer: list[dict], expected: list[dict]) -> float:
    """The share of `expected`'s detections that `answer` holds (same class, box within 0.05
    pixels, score within 1e-3): a forward pass shared with other images may round otherwise."""
    if not expected:
        return float(not answer)
    found = 0
    for item in expected:
        found += any(
            other["label"] == item["label"]
            and abs(other["score"] - item["score"]) < 1e-3
            and np.allclose(other["box"], item["box"], atol=0.05)
            for other in answer
        )
    return found / max(len(expected), len(answer))


@pytest.mark.parametrize("max_batch", [4, 1])
def test_concurrent_requests_each_get_their_own_images_detections(model, tmp_path, monkeypatch, max_batch):
    images = [encoded(picture(20 + n)) for n in range(4)]
    # The last request asks for a threshold between two of its image's scores.
    scores = sorted({d["score"] for d in expected_answer(model, images[3], tmp_path)[0]})
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    thresholds = [0.0, 0.0, 0.0, middle]
    expected = [expected_answer(model, data, tmp_path, t)[0] for data, t in zip(images, thresholds)]
    assert all(expected[i] != expected[j] for i in range(4) for j in range(i))  # the images tell apart
    assert 0 < len(expected[3]) < len(scores)

    original, calls = model.predict, []
    entered, gate = threading.Event(), threading.Event()

    def recording(images, *args, **kwargs):
        calls.append((len(images), kwargs["score_threshold"]))
        if len(calls) == 1:
            entered.set()
            assert gate.wait(WAIT)
        return original(images, *args, **kwargs)

    monkeypatch.setattr(model, "predict", recording)
    app = create_app(model, ServeSettings(max_batch=max_batch, max_wait_ms=0))
    metrics = app.state.metrics

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):

            def post(n):
                return client.post(f"/v1/predict?score_threshold={thresholds[n]}", content=images[n])

            first = asyncio.ensure_future(post(0))
            await asyncio.to_thread(entered.wait, WAIT)
            rest = [asyncio.ensure_future(post(n)) for n in (1, 2, 3)]
            await _until(lambda: _queued(metrics) == 3)
            gate.set()
            return await asyncio.wait_for(asyncio.gather(first, *rest), WAIT)

    responses = asyncio.run(run())
    answers = [response.json()["detections"] for response in responses]
    assert all(response.status_code == 200 for response in responses)
    for n, answer in enumerate(answers):
        own = _matches(answer, expected[n])
        assert own >= 0.9, (n, own)
        assert all(_matches(answer, expected[m]) < own for m in range(4) if m != n)
    if max_batch == 4:
        assert [size for size, _ in calls] == [1, 3]
        assert calls[1][1] == 0.0  # the shared pass ran at its lowest threshold; request 3 filtered
        assert all(d["score"] >= middle for d in answers[3])
        assert [response.json()["timing"]["inference_ms"] for response in responses[1:]].count(
            responses[1].json()["timing"]["inference_ms"]
        ) == 3  # one pass for the three
    else:
        assert [size for size, _ in calls] == [1, 1, 1, 1]


# README, "Dynamic batching": a shared pass sums in another order than a pass of one image
# (GroupNorm's and small convolutions' CPU kernels split their work by batch size), so an image's
# detections in it are its detections alone to within float rounding, not bit for bit.
SCORE_ROUNDING = 1e-3
BOX_ROUNDING = 0.01  # pixels
MASK_ROUNDING = 1e-3  # share of a mask's pixels


def test_a_shared_pass_gives_each_image_its_detections_alone_to_within_rounding():
    model = tiny_model()
    model.set_detections_per_image(100)  # no cap to cut a near tie in one pass and not the other
    run = _model_runner(model, ServeSettings())
    images = [to_image_tensor(picture(40 + n, 192, 256), model.config.input, "test") for n in range(4)]
    edge = model.roi_heads.box_head.score_threshold + SCORE_ROUNDING  # closer may differ
    for image, shared in zip(images, run(images, 0.0, None, None)):
        (alone,) = run([image], 0.0, None, None)
        clear = alone["scores"] >= edge
        assert int(clear.sum()) > 0 and int((shared["scores"] >= edge).sum()) == int(clear.sum())
        for i in clear.nonzero()[:, 0].tolist():
            # Its counterpart: the same label and the nearest box (near ties may swap places).
            same_label = (shared["labels"] == alone["labels"][i]).nonzero()[:, 0]
            distance = (shared["boxes"][same_label] - alone["boxes"][i]).abs().amax(1)
            j = int(same_label[distance.argmin()])
            assert float(distance.min()) <= BOX_ROUNDING
            assert abs(float(shared["scores"][j] - alone["scores"][i])) <= SCORE_ROUNDING
            differing = int((shared["masks"][j] != alone["masks"][i]).sum())
            assert differing <= MASK_ROUNDING * max(int(alone["masks"][i].sum()), 1)
