"""Dynamic batching: requests that arrive close together share one forward pass.

One worker thread owns the model. It takes the first waiting image, then gathers more until it
has `max_batch` of them or `max_wait_ms` has passed since the first was taken, runs them as one
`predict` call and hands each result to its own request. Why one thread: inference stays off
the event loop (which keeps accepting, reading uploads and answering /healthz meanwhile), and
two forward passes at once would only fight over the same cores (a 2-core CPU runs one pass on
both) and double the memory. Decoding uploads and encoding answers happen elsewhere (the
app's thread pool), so they overlap with inference.

Only images of one size share a pass, so that a request's detections are those of its image
alone, whatever else was waiting (to within float rounding: a pass of several images sums in
another order than a pass of one, README "Dynamic batching"). A batch runs at the lowest
score threshold among its requests; each request filters its own result afterwards
(`responses.keep_scoring`). A tiled request runs alone: its tiles are its batch.
"""

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

# predict(images, score_threshold, tile, tile_overlap) -> one detections dict per image
Predict = Callable[[list[Tensor], float, int | None, int | None], list[dict]]
_STOP = object()  # queued by `stop`: everything queued before it is still run


class BatcherStopped(RuntimeError):
    """The batcher takes no more images (the server is shutting down)."""


@dataclass(frozen=True)
class BatchResult:
    """One image's detections, and what happened to it: milliseconds spent waiting for the
    model (queue_ms) and in the forward pass it shared (inference_ms) with batch_size images."""

    detections: dict
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass
class _Job:
    image: Tensor  # (C, H, W), the model's input
    score_threshold: float
    tile: int | None
    tile_overlap: int | None  # None: the model's default for the tile
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    submitted: float  # time.perf_counter()

    def settle(self, result: BatchResult | None, error: BaseException | None) -> None:
        """Hand the outcome to the request's event loop (futures are not thread-safe)."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
        except RuntimeError:  # the loop is closed: nobody waits for this any more
            pass


def _joins(job: _Job, first: _Job) -> bool:
    """Whether `job` may share `first`'s pass: untiled and of the same size. Images of other
    sizes would be padded to a common size, and padding changes an image's detections (it
    enters GroupNorm's statistics and the receptive fields at the image's border), so a
    request's answer would depend on the other requests of its batch."""
    return job.tile is None and job.image.shape == first.image.shape


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the request was cancelled (its client went away)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Runs `predict` on batches of submitted images in a thread of its own.

    max_batch: images per forward pass at most (1: no batching). max_wait_ms: how long a
    batch's first image waits for company (images of its size). metrics: a `ServerMetrics` whose batch-size
    histogram and queue-depth gauge this keeps (None: no metrics).
    """

    def __init__(self, predict: Predict, max_batch: int, max_wait_ms: float, metrics=None):
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._metrics = metrics
        self._queue: queue.Queue = queue.Queue()
        self._pending: deque = deque()  # jobs taken while gathering that did not join the batch
        self._gathering: list[_Job] = []  # the batch being gathered or run
        self._lock = threading.Lock()
        self._accepting = False
        self._thread = threading.Thread(target=self._work, name="maskrcnn-batcher", daemon=True)
        self._signalled: float | None = None  # time.monotonic() of the stop signal
        self.dropped = 0  # images answered BatcherStopped while they waited (the deadline's drop)
        self.cut_off = 0  # requests the server's shutdown cancelled (`shutdown_cut_off`)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive (after `stop`: a pass it could not finish in time)."""
        return self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            self._accepting = True
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Take no more images, finish those already queued, and end the worker (blocking for
        at most `timeout` seconds: a pass that runs longer is left to the daemon thread, and
        `running` says so: the serve command then ends the process without the interpreter's
        exit, which would abort under it)."""
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def begin_shutdown(self, drop_after: float) -> None:
        """A stop signal arrived (the server takes no new connections): images of the
        connections still open are run as they come for `drop_after` seconds; then every image
        still waiting, and any that comes later, is answered with BatcherStopped (the server's
        503) instead of running; the pass that is running then ends as it ends, and a request
        of it still open when the server's time runs out is answered by `shutdown_cut_off`."""
        self._signalled = time.monotonic()
        timer = threading.Timer(drop_after, self._drop_waiting, args=(drop_after,))
        timer.daemon = True
        timer.start()

    def _drop_waiting(self, seconds: float) -> None:
        with self._lock:
            self._accepting = False
            waiting = list(self._pending)
            self._pending.clear()
            while True:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._queue.put(_STOP)  # the worker ends after the pass it runs
        dropped = [job for job in waiting if job is not _STOP]
        self.dropped += len(dropped)
        if self._metrics is not None and dropped:
            self._metrics.queue_depth.dec(len(dropped))
        error = BatcherStopped(
            f"the server shut down before this image's turn came ({seconds:g} s after the stop signal)"
        )
        for job in dropped:
            job.settle(None, error)

    def shutdown_cut_off(self) -> BatcherStopped | None:
        """A request was cancelled (on the event loop): if a stop signal came first, this is the
        server's shutdown cutting it off at its deadline (uvicorn cancels the requests still
        running then), whether its image waits for the model or is in a pass that cannot be
        interrupted: count it, and return the error to answer it with (503), since every answer
        is JSON. None: the cancellation is someone else's, to propagate."""
        if self._signalled is None:
            return None
        self.cut_off += 1
        seconds = time.monotonic() - self._signalled
        return BatcherStopped(
            f"the server shut down before this request was answered ({seconds:.1f} s after the stop "
            "signal, its shutdown time ran out)"
        )

    async def submit(
        self,
        image: Tensor,
        score_threshold: float,
        tile: int | None = None,
        tile_overlap: int | None = None,
    ) -> BatchResult:
        """Queue one image (C, H, W) and wait for its detections; raises what `predict` raised
        for its batch, or BatcherStopped once the batcher is stopping."""
        loop = asyncio.get_running_loop()
        job = _Job(
            image, score_threshold, tile, tile_overlap, loop, loop.create_future(), time.perf_counter()
        )
        with self._lock:  # with `stop`'s: no job lands behind the stop marker
            if not self._accepting:
                raise BatcherStopped("the server is shutting down and takes no new images")
            self._queue.put(job)
        if self._metrics is not None:
            self._metrics.queue_depth.inc()
        return await job.future

    def _work(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._run(batch)
                self._gathering = []
        except BaseException as error:  # a bug of the batcher's own: no request may wait forever
            with self._lock:
                self._accepting = False
            stranded = [*self._gathering, *self._pending]
            while not self._queue.empty():
                stranded.append(self._queue.get_nowait())
            failure = RuntimeError(f"the batcher failed: {type(error).__name__}: {error}")
            for job in stranded:
                if job is not _STOP:
                    job.settle(None, failure)
            raise

    def _next_batch(self) -> list[_Job] | None:
        """The next pass's jobs: the oldest waiting one, then others of its image size, from
        those set aside earlier and from the queue until max_batch or the deadline. Tiled jobs
        and other sizes are set aside; each starts a later pass in its order of arrival."""
        first = self._pending.popleft() if self._pending else self._queue.get()
        if first is _STOP:  # nothing is queued behind it
            return None
        batch = self._gathering = [first]
        if first.tile is not None:
            return batch
        for job in list(self._pending):
            if len(batch) < self.max_batch and job is not _STOP and _joins(job, first):
                self._pending.remove(job)
                batch.append(job)
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            # Past the deadline, images already waiting still join: taking them costs no time.
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP and _joins(job, first):
                batch.append(job)
                continue
            self._pending.append(job)
            if job is _STOP:
                break
        return batch

    def _run(self, batch: list[_Job]) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.dec(len(batch))
            self._metrics.batch_size.observe(len(batch))
        first = batch[0]
        started = time.perf_counter()
        try:
            threshold = min(job.score_threshold for job in batch)
            images = [job.image for job in batch]
            results = self._predict(images, threshold, first.tile, first.tile_overlap)
            if len(results) != len(batch):
                raise RuntimeError(f"the model returned {len(results)} results for {len(batch)} images")
        except Exception as error:  # every request of the batch fails alike; the worker goes on
            for job in batch:
                job.settle(None, error)
            return
        inference_ms = (time.perf_counter() - started) * 1000
        for job, detections in zip(batch, results):
            queue_ms = (started - job.submitted) * 1000
            job.settle(BatchResult(detections, queue_ms, inference_ms, len(batch)), None)
