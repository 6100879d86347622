"""The shutdown bound, over HTTP: after the stop signal, images still waiting for the model are
answered 503 while their connections are open, and the server ends within its shutdown time
even when a forward pass is still running, answering that pass's request 503 too."""

import threading

import httpx
from serve_helpers import encoded, picture

from maskrcnn.serve.app import create_app
from maskrcnn.serve.command import _uvicorn_server, bind
from maskrcnn.serve.settings import ServeSettings

WAIT = 120  # seconds: "does not hang", not a speed


class BlockedModel:
    """The model's predict, held at its start until `release` is set."""

    def __init__(self, model):
        self.model, self.entered, self.release = model, threading.Event(), threading.Event()
        self.original = model.predict

    def predict(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(WAIT)
        return self.original(*args, **kwargs)


def _serve(model, shutdown_seconds):
    blocked = BlockedModel(model)
    model.predict = blocked.predict
    app = create_app(model, ServeSettings(max_batch=1, shutdown_seconds=shutdown_seconds))
    listener = bind("127.0.0.1", 0)
    server = _uvicorn_server(app, shutdown_seconds)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    return blocked, server, thread, f"http://127.0.0.1:{listener.getsockname()[1]}", app


def _post(url, answers, key):
    with httpx.Client(timeout=WAIT) as client:
        try:
            answers[key] = client.post(f"{url}/v1/predict", content=encoded(picture(5)))
        except httpx.HTTPError as error:  # cut off with its connection
            answers[key] = error


def _until(condition):
    for _ in range(WAIT * 20):
        if condition():
            return
        threading.Event().wait(0.05)
    raise AssertionError("timed out")


def _running_and_waiting(url, app, answers):
    """Request a's pass running, b waiting behind it."""
    threads = [threading.Thread(target=_post, args=(url, answers, key), daemon=True) for key in "ab"]
    threads[0].start()
    _until(lambda: app.state.blocked.entered.is_set())  # a's pass has started
    threads[1].start()
    _until(lambda: app.state.metrics.registry.get_sample_value("maskrcnn_queue_depth") >= 1)
    return threads


def test_waiting_images_are_answered_503_and_a_pass_in_time_finishes(model):
    original = model.predict
    try:
        blocked, server, thread, url, app = _serve(model, shutdown_seconds=2.0)
        app.state.blocked = blocked
        _until(lambda: server.started)
        answers = {}
        threads = _running_and_waiting(url, app, answers)
        server.handle_exit(15, None)  # SIGTERM
        threads[1].join(WAIT)
        assert answers["b"].status_code == 503
        assert "shut down before this image's turn came" in answers["b"].json()["error"]
        blocked.release.set()  # the running pass ends within the time: its answer arrives
        threads[0].join(WAIT)
        assert answers["a"].status_code == 200 and "detections" in answers["a"].json()
        thread.join(WAIT)
        assert not thread.is_alive()
    finally:
        model.predict = original


def test_the_server_ends_in_its_time_while_a_pass_still_runs(model):
    original = model.predict
    try:
        blocked, server, thread, url, app = _serve(model, shutdown_seconds=1.0)
        app.state.blocked = blocked
        _until(lambda: server.started)
        answers = {}
        threads = _running_and_waiting(url, app, answers)
        server.handle_exit(15, None)
        thread.join(WAIT)  # the server has ended ...
        assert not thread.is_alive()
        assert not blocked.release.is_set()  # ... while the pass it cut off still runs
        threads[1].join(WAIT)
        assert answers["b"].status_code == 503  # answered while its connection was open
        threads[0].join(WAIT)
        # The request whose pass ran on is answered like every error: JSON, no traceback.
        assert answers["a"].status_code == 503, answers["a"]
        assert (
            answers["a"].json()["error"].startswith("the server shut down before this request was answered (")
        )
        assert (app.state.batcher.dropped, app.state.batcher.cut_off) == (1, 1)
    finally:
        blocked.release.set()
        model.predict = original
