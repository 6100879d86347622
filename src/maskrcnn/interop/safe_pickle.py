"""Reading weights pickles without running them: detectron2's `.pkl` files.

A pickle can name any Python object to call while it loads; a weights file needs only dicts,
lists, strings, numbers and numpy arrays. This unpickler builds those and refuses every other
global before it is looked up, so a malicious file is an error, never code that runs.
"""

import codecs
import collections
import pickle
from pathlib import Path

import numpy as np

from maskrcnn.interop.state_dicts import CheckpointError


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The (module, name) pairs a weights pickle may ask for, with the objects they resolve to:
    what rebuilds numpy arrays, dtypes and scalars (under numpy 1's and numpy 2's module
    paths, resolved in the numpy installed), ordered dicts, and the bytes of a Python 3
    pickle of protocol 2 (`_codecs.encode` of a latin-1 string, `_latin1_bytes`)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1 before 1.26
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _latin1_bytes(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """The bytes a Python 3 pickle of protocol 2 stores as `_codecs.encode(text, "latin1")`; no
    other codec (some compress or transform) is run."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}, not latin-1")
    return codecs.encode(text, "latin1", errors)


class _WeightsUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays: any other global a pickle
    names (a function to call, a class to build) is refused before it is looked up."""

    def __init__(self, file, source: str):
        # latin1: the bytes of numpy arrays in pickles written by Python 2 (Detectron's files)
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        found = self.allowed.get((module, name))
        if found is None:
            raise CheckpointError(
                f"{self.source}: refused: the pickle asks for the Python object {module}.{name}, "
                "and a weights file holds only dicts, lists, strings, numbers and numpy arrays "
                "(nothing of it was run)"
            )
        return found

    def persistent_load(self, pid):
        raise CheckpointError(
            f"{self.source}: refused: the pickle refers to objects stored outside it (persistent id "
            f"{str(pid)[:40]!r}), which a weights file does not"
        )


def read_pickle_file(path) -> object:
    """A plain pickle (detectron2's .pkl) read by `_WeightsUnpickler`, every failure a
    CheckpointError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return _WeightsUnpickler(file, str(path)).load()
    except CheckpointError:
        raise
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the file ({error.strerror or error})") from None
    except Exception as error:  # truncated or corrupt: pickle fails in many ways
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
        raise CheckpointError(f"{path}: truncated or corrupt pickle, cannot be read ({detail})") from None
