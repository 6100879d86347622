"""The server's settings and limits, as `maskrcnn serve` takes them from its options.

Free of torch and of the web framework: the command line reads the defaults from here before
anything heavy is imported.
"""

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from maskrcnn import choices

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"  # loopback: reachable from this machine only, unless --host says otherwise
DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH = 4
DEFAULT_MAX_WAIT_MS = 10.0
DEFAULT_MAX_BODY_MB = 50
# 50 megapixels (a 7000 x 7000 image): its float input alone is 600 MB, per request in flight.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
MAX_BATCH = 64
MEGABYTE = 1_000_000
# SIGTERM: requests in flight get this long to finish before they are cancelled.
GRACEFUL_SHUTDOWN_SECONDS = 30.0
# The query options of POST /v1/predict (its score threshold's default is every prediction
# path's: choices.PREDICT_SCORE_THRESHOLD). Any other is refused: a misspelt option silently
# ignored would answer at other settings than the client asked for.
PREDICT_OPTIONS = ("score_threshold", "mask_format", "tile", "tile_overlap")
MASK_FORMATS = ("rle", "polygons")


@dataclass(frozen=True)
class ServeSettings:
    """What `create_app` needs besides the model.

    max_batch: images run in one forward pass at most (1: every request alone).
    max_wait_ms: how long the first request of a batch waits for others to join it.
    max_body_bytes: larger request bodies are refused (413) before or while they are read.
    max_image_pixels: images whose header claims more pixels (width x height x planes) are
        refused (413) before decoding; 0: no limit.
    precision: `MaskRCNN.predict`'s precision (fp32, bf16, fp16, auto).
    device: where the model runs, as reported by GET /v1/model.
    static_dir: the web page's folder (index.html, its scripts and styles); a missing folder
        makes / answer 404.
    shutdown_seconds: after a stop signal, how long the requests in flight have: images still
        waiting for the model then are answered 503 and dropped, and a pass still running is
        cut off with its connections (uvicorn's graceful timeout).
    """

    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * MEGABYTE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    precision: str = "fp32"
    device: str = "cpu"
    static_dir: Path = STATIC_DIR
    shutdown_seconds: float = GRACEFUL_SHUTDOWN_SECONDS

    def __post_init__(self):
        if self.max_batch < 1:
            raise ValueError(f"max_batch: expected a whole number >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: expected a number >= 0, got {self.max_wait_ms}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: expected a whole number >= 1, got {self.max_body_bytes}")
        if self.shutdown_seconds < 0:
            raise ValueError(f"shutdown_seconds: expected a number >= 0, got {self.shutdown_seconds}")
        if self.max_image_pixels < 0:
            raise ValueError(f"max_image_pixels: expected a whole number >= 0, got {self.max_image_pixels}")

    def limits(self) -> dict:
        """The limits as GET /v1/model reports them (the page checks a file's size before sending)."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_image_pixels": self.max_image_pixels,
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_ms,
        }


def tile_problem(tile: int, overlap: int | None) -> str | None:
    """What is wrong with a request's `tile` (0: no tiling) and `tile_overlap` (None: nothing),
    by the rule the model and the command line follow (`choices.tiling_problem`)."""
    problem = choices.tiling_problem(tile, overlap, "tile", "tile_overlap")
    return f"query parameter {problem}" if problem else None


def unknown_option_problem(names: Iterable[str]) -> str | None:
    """What is wrong with a request's query parameter names: the first that is no option of
    POST /v1/predict, with the closest option, as the command line names a misspelt one."""
    for name in names:
        if name not in PREDICT_OPTIONS:
            close = difflib.get_close_matches(name, PREDICT_OPTIONS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"the options are {', '.join(PREDICT_OPTIONS)}"
            return f"query parameter {name}: unknown; {hint}"
    return None
