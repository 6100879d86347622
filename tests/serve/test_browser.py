"""The page of `maskrcnn serve`, driven in a real headless Chromium against the real server
with a trained shapes model: upload, overlay, score and class filters, downloads, and the
message for a file the server rejects.

Skipped when Chromium or its driver is missing, except under CI (CI set), where that fails."""

import base64
import importlib.util
import io
import json
import mimetypes
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import maskrcnn.serve

PREDICT_QUERY = "score_threshold=0.05&mask_format=polygons"
SERVER_START_SECONDS = 60
WAIT_SECONDS = 30
DEFAULT_SCORE = 0.5  # the slider's initial value in index.html

# Requests to the local server go direct, whatever proxy the environment names.
_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _missing() -> list[str]:
    """What the test needs and this machine lacks: the browser, its driver, selenium."""
    missing = [f"{name} not on PATH" for name in ("chromium", "chromedriver") if not shutil.which(name)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium not installed")
    return missing


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# Decided before any fixture runs, so a skip costs no training. Under CI the test runs and
# its `browser` fixture fails on what is missing.
pytestmark = pytest.mark.skipif(
    bool(_missing()) and not _under_ci(),
    reason=f"the web page was not tested in a browser ({', '.join(_missing())}): install chromium and "
    "chromium-driver to run it",
)


def _get_json(url: str):
    with _local.open(url, timeout=60) as response:
        return json.loads(response.read())


def _post_image(base_url: str, data: bytes, name: str):
    """POST `data` as the multipart field `file`, as the page does; returns (status, JSON body)."""
    boundary = uuid.uuid4().hex
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{base_url}/v1/predict?{PREDICT_QUERY}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with _local.open(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _drain(stream, lines: list, found: queue.Queue):
    """Collect a pipe's lines (so the server never blocks on a full pipe) and report each."""
    for line in stream:
        lines.append(line)
        found.put(line)


@pytest.fixture
def server(trained_shapes_weights):
    """`maskrcnn serve` on a free port; yields its base URL, e.g. http://127.0.0.1:PORT."""
    command = [sys.executable, "-m", "maskrcnn", "serve", "--weights", str(trained_shapes_weights)]
    process = subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err, stdout_lines = [], [], queue.Queue()
    drains = [
        threading.Thread(target=_drain, args=(process.stdout, out, stdout_lines), daemon=True),
        threading.Thread(target=_drain, args=(process.stderr, err, queue.Queue()), daemon=True),
    ]
    for drain in drains:
        drain.start()
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        base_url = None
        while base_url is None:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                break
            try:
                line = stdout_lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            base_url = match and match.group(1)
        if base_url is None:
            if process.poll() is not None:  # it has exited: read the rest of its output
                for drain in drains:
                    drain.join(timeout=10)
            pytest.fail(
                f"`maskrcnn serve` did not report its address within {SERVER_START_SECONDS} s "
                f"(exit status {process.poll()}).\nstdout:\n{''.join(out)}\nstderr:\n{''.join(err)}"
            )
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium at 1280x900 that saves downloads to tmp_path/downloads."""
    if _missing():
        pytest.fail(f"{', '.join(_missing())}; under CI the browser test must run (see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # The driver named explicitly, so Selenium Manager fetches nothing.
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def _wait_for_state(driver, wanted: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        settled = lambda d: _state(d) in (wanted, "error")
        WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(settled)
    except Exception as error:
        raise AssertionError(f"the page's state is {_state(driver)!r}, not {wanted!r}") from error
    message = driver.find_element("id", "message").text
    assert _state(driver) == wanted, f"the page's state is {_state(driver)!r}; message: {message!r}"


def _rows(driver) -> list[list[str]]:
    """The detections table's body, as the text of each cell."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#detections tbody tr')]"
        ".map(row => [...row.cells].map(cell => cell.textContent.trim()));"
    )


def _expected_rows(detections, minimum: float, hidden_labels=()) -> list[list[str]]:
    """What the table must show: rank (in the server's order), an empty colour cell, class,
    score to 2 decimals and box to 1 decimal, for the detections the filters let through."""
    return [
        [str(rank + 1), "", d["class_name"], f"{d['score']:.2f}", *(f"{v:.1f}" for v in d["box"])]
        for rank, d in enumerate(detections)
        if d["score"] >= minimum and d["label"] not in hidden_labels
    ]


def _check_table(driver, detections, minimum: float, hidden_labels=()):
    expected = _expected_rows(detections, minimum, hidden_labels)
    assert _rows(driver) == expected
    count = driver.find_element("id", "count").text
    assert count == f"{len(expected)} of {len(detections)} detections shown"
    return expected


def _canvas_pixels(driver) -> np.ndarray:
    """The canvas' pixels via getImageData, as an (H, W, 4) uint8 array."""
    encoded, width, height = driver.execute_script(
        """
        const canvas = document.getElementById('canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let text = '';
        for (let i = 0; i < data.length; i += 32768) {
          text += String.fromCharCode.apply(null, data.subarray(i, i + 32768));
        }
        return [btoa(text), canvas.width, canvas.height];
        """
    )
    return np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).reshape(height, width, 4)


def _pick_image(base_url: str, images: Path):
    """The validation image whose prediction shows the most classes, then the most detections,
    at the slider's default value; returns (path, prediction)."""
    best = None
    for path in sorted(images.glob("*.png")):
        status, prediction = _post_image(base_url, path.read_bytes(), path.name)
        assert status == 200, prediction
        shown = [d for d in prediction["detections"] if d["score"] >= DEFAULT_SCORE]
        key = (len({d["label"] for d in shown}), len(shown))
        if best is None or key > best[0]:
            best = (key, path, prediction)
    assert best is not None, f"no PNG images in {images}"
    assert best[0][1] >= 1, f"the trained model detects nothing at score >= {DEFAULT_SCORE} in {images}"
    return best[1], best[2]


def _higher_threshold(scores: list[float], low: float) -> float:
    """A slider value (a multiple of 0.01 above `low`) that hides some of the scores >= low,
    keeping as many as it can, and is not within 0.002 of any score."""
    shown = [s for s in scores if s >= low]
    for hundredths in range(round(low * 100) + 1, 101):
        value = hundredths / 100
        if all(abs(s - value) > 0.002 for s in scores) and sum(s >= value for s in shown) < len(shown):
            return value
    pytest.fail(f"no slider value above {low} separates the scores {shown}")


def _mask_image(detection, scale: int, size) -> np.ndarray:
    """The detection's polygons filled at the canvas' scale, as an (H, W) bool array."""
    image = Image.new("L", size, 0)
    for polygon in detection["mask"]:
        points = [(v * scale) for v in polygon]
        if len(points) >= 6:
            ImageDraw.Draw(image).polygon(points, fill=255)
    return image


def _mask_alpha() -> float:
    """The page's mask opacity, read from the script the server sends."""
    script = (Path(maskrcnn.serve.__file__).parent / "static" / "app.js").read_text()
    return float(re.search(r"const MASK_ALPHA = ([0-9.]+);", script).group(1))


def _check_overlay(pixels: np.ndarray, scale: int, image_path: Path, detections, swatches):
    """The canvas holds the image, enlarged `scale` times, with the shown detections' masks
    laid over it in their swatch colours, the best on top, and the image unchanged away from them.

    The expected picture is composed here the same way (worst first, each mask at the page's
    opacity over what lies below); it is compared inside the best detection's mask, away from
    every mask's outline and every box's edges, where lines and antialiasing do not reach."""
    original = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float64)
    original = original.repeat(scale, axis=0).repeat(scale, axis=1)
    assert pixels.shape[:2] == original.shape[:2]
    drawn = pixels[..., :3].astype(np.float64)
    height, width = original.shape[:2]
    alpha = _mask_alpha()
    band = 2 * scale + 1

    expected = original.copy()
    masks = [_mask_image(d, scale, (width, height)) for d in detections]
    for mask, colour in reversed(list(zip(masks, swatches))):
        inside = np.asarray(mask) > 0
        expected[inside] = alpha * np.asarray(colour, dtype=np.float64) + (1 - alpha) * expected[inside]

    checked = np.asarray(masks[0].filter(ImageFilter.MinFilter(band))) > 0
    for mask, d in zip(masks[1:], detections[1:]):
        outline = (np.asarray(mask.filter(ImageFilter.MaxFilter(band))) > 0) & ~(
            np.asarray(mask.filter(ImageFilter.MinFilter(band))) > 0
        )
        checked &= ~outline
        x, y, w, h = (v * scale for v in d["box"])
        edges = np.zeros((height, width), dtype=bool)
        y0, y1 = max(0, int(y) - band), int(y + h) + band + 1
        x0, x1 = max(0, int(x) - band), int(x + w) + band + 1
        edges[y0:y1, x0:x1] = True
        edges[int(y) + band : int(y + h) - band, int(x) + band : int(x + w) - band] = False  # empty if narrow
        checked &= ~edges
    assert checked.sum() > 20, "the best detection's mask leaves too little to check"
    close = (np.abs(drawn - expected).max(axis=-1) <= 12)[checked].mean()
    assert close > 0.8, f"only {close:.0%} of the best mask's pixels show the masks as composed, best on top"

    # Away from every shown detection (its box, widened, and the label above it): the image itself.
    near = np.zeros((height, width), dtype=bool)
    for d in detections:
        x, y, w, h = (v * scale for v in d["box"])
        margin = 3 * scale
        near[
            max(0, int(y - margin - 8 * scale)) : int(y + h + margin) + 1,
            max(0, int(x - margin)) : int(x + w + margin) + 1,
        ] = True
    away = ~near
    assert away.sum() > 1000, "the shown detections leave too little of the image to check"
    unchanged = (np.abs(drawn - original).max(axis=-1) <= 3)[away].mean()
    assert unchanged > 0.9, f"only {unchanged:.0%} of the image away from the detections is the image"


def _wait_for_file(path: Path) -> Path:
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was not downloaded; found {os.listdir(path.parent)}"
        time.sleep(0.1)
    return path  # complete: Chromium writes to a .crdownload file and renames it when done


def test_page_in_browser(browser, server, trained_shapes_images, tmp_path):
    from selenium.webdriver.common.keys import Keys

    driver, base_url = browser, server
    model = _get_json(f"{base_url}/v1/model")
    image_path, prediction = _pick_image(base_url, Path(trained_shapes_images))
    detections = prediction["detections"]
    scores = [d["score"] for d in detections]
    assert scores == sorted(scores, reverse=True)

    driver.get(f"{base_url}/")
    _wait_for_state(driver, "idle")
    assert driver.title
    class_boxes = driver.execute_script(
        "return [...document.querySelectorAll('#classes input[type=checkbox]')]"
        ".map(box => [box.value, box.checked, box.parentElement.textContent.trim()]);"
    )
    assert class_boxes == [[str(c["label"]), True, c["name"]] for c in model["classes"]]
    for c in model["classes"]:
        assert c["name"] in driver.find_element("id", "model").text

    # Upload through the file input: the table lists exactly the API's detections >= 0.5.
    driver.find_element("id", "file").send_keys(str(image_path.resolve()))
    _wait_for_state(driver, "ready")
    slider = driver.find_element("id", "score")
    assert float(slider.get_attribute("value")) == DEFAULT_SCORE
    assert driver.find_element("id", "score-value").text == f"{DEFAULT_SCORE:.2f}"
    shown = _check_table(driver, detections, DEFAULT_SCORE)
    assert shown, "nothing to see on the page"
    assert re.search(r"\d+ ms", driver.find_element("id", "timing").text)  # the page's own request's time

    # The overlay: the image, enlarged, with the best detection's mask tinted in its swatch colour.
    scale = int(driver.execute_script("return document.getElementById('canvas').dataset.scale"))
    assert scale >= 1
    swatches = [
        [int(v) for v in re.findall(r"\d+", text)[:3]]
        for text in driver.execute_script(
            "return [...document.querySelectorAll('#detections tbody tr .swatch')]"
            ".map(s => getComputedStyle(s).backgroundColor);"
        )
    ]
    pixels = _canvas_pixels(driver)
    assert pixels.shape[:2] == (prediction["image"]["height"] * scale, prediction["image"]["width"] * scale)
    top_shown = [d for d in detections if d["score"] >= DEFAULT_SCORE]
    driver.save_screenshot(str(tmp_path / "serve_page.png"))
    if os.environ.get("MASKRCNN_SCREENSHOT"):
        driver.save_screenshot(os.environ["MASKRCNN_SCREENSHOT"])
    assert len(swatches) == len(top_shown)
    _check_overlay(pixels, scale, image_path, top_shown, swatches)

    # The downloads hold what is shown: the COCO results and the canvas itself.
    driver.find_element("id", "download-json").click()
    results = json.loads(_wait_for_file(driver.downloads / f"{image_path.stem}_results.json").read_text())
    assert results == [
        {
            "image_id": 1,
            "category_id": d["category_id"],
            "bbox": d["box"],
            "score": d["score"],
            "segmentation": d["mask"],
        }
        for d in top_shown
    ]
    driver.find_element("id", "download-png").click()
    overlay = _wait_for_file(driver.downloads / f"{image_path.stem}_overlay.png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(overlay.read_bytes())).convert("RGBA")), pixels)

    # A higher minimum score, by keyboard: the list shrinks to the API's detections above it.
    higher = _higher_threshold(scores, DEFAULT_SCORE)
    slider.send_keys(Keys.ARROW_RIGHT * round((higher - DEFAULT_SCORE) * 100))
    assert float(slider.get_attribute("value")) == higher
    assert driver.find_element("id", "score-value").text == f"{higher:.2f}"
    fewer = _check_table(driver, detections, higher)
    assert len(fewer) < len(shown)

    # Unchecking a class hides its rows; set back to the default score to have more of them.
    driver.execute_script(
        "const s = document.getElementById('score'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        str(DEFAULT_SCORE),
    )
    _check_table(driver, detections, DEFAULT_SCORE)
    hidden = shown[0][2]
    hidden_label = next(c["label"] for c in model["classes"] if c["name"] == hidden)
    driver.find_element("css selector", f"#classes input[value='{hidden_label}']").click()
    remaining = _check_table(driver, detections, DEFAULT_SCORE, hidden_labels={hidden_label})
    assert len(remaining) < len(shown)
    assert hidden not in [row[2] for row in remaining]

    # One request per image: filtering never asks the server again; nothing came from elsewhere.
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert sum("/v1/predict" in name for name in resources) == 1
    assert all(name.startswith(f"{base_url}/") for name in resources), resources
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe

    # A corrupt file: the page shows the server's error text and drops the previous result.
    corrupt = tmp_path / "x.png"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    status, answer = _post_image(base_url, corrupt.read_bytes(), corrupt.name)
    assert status == 400, answer
    driver.find_element("id", "file").send_keys(str(corrupt))
    _wait_for_state(driver, "error")
    message = driver.find_element("id", "message")
    assert message.is_displayed()
    assert message.text == answer["error"]
    assert message.get_attribute("role") == "alert"
    assert _rows(driver) == []
    assert not driver.find_element("id", "download-json").is_enabled()

    # Dropping the image onto the drop zone uploads it just as the file input does.
    driver.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], arguments[1], {type: 'image/png'}));
        const zone = document.getElementById('drop');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
        """,
        base64.b64encode(image_path.read_bytes()).decode(),
        image_path.name,
    )
    _wait_for_state(driver, "ready")
    assert not driver.find_element("id", "message").is_displayed()
    _check_table(driver, detections, DEFAULT_SCORE, hidden_labels={hidden_label})
