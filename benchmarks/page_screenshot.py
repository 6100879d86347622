"""The README's picture of `maskrcnn serve`'s web page, from a model you choose.

    python benchmarks/page_screenshot.py --weights runs/demo/model_final.pt \
        --image data/shapes/val/000003.png --out docs/serve_page.png

Starts `maskrcnn serve --port 0`, opens its page in headless Chromium (Debian's chromium and
chromium-driver, as the browser test uses), uploads the image, waits for the detections and
saves the window (1280 x 900). Not a test: the browser test checks the page.
"""

import argparse
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

WAIT_SECONDS = 120


def serve(weights: str):
    command = [
        sys.executable,
        "-m",
        "maskrcnn",
        "serve",
        "--weights",
        weights,
        "--port",
        "0",
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if match:
            return process, match.group(1)
    process.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", default="docs/serve_page.png")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    process, url = serve(args.weights)
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(f"{url}/")
        state = lambda d: d.execute_script("return document.body.dataset.state")  # noqa: E731
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: state(d) == "idle")
        driver.find_element("id", "file").send_keys(str(Path(args.image).resolve()))
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: state(d) in ("ready", "error"))
        driver.save_screenshot(args.out)
        print(f"{args.out}: the page with {args.image} ({state(driver)})")
    finally:
        driver.quit()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
