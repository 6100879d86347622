"""Fixtures of the weights-file tests."""

from pathlib import Path

import pytest


def _damaged(path: Path) -> bytes:
    """The bytes of torch.save's archive `path` with 16 bytes inside its largest tensor's data
    changed, as a disk or a transfer damages a file: the archive stays readable, torch.load
    reads it, and only the member's CRC-32 tells."""
    import zipfile

    whole = bytearray(Path(path).read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        data = archive.read(member)
    start = whole.find(data) + len(data) // 2
    whole[start : start + 16] = bytes(b ^ 0xFF for b in whole[start : start + 16])
    return bytes(whole)


@pytest.fixture(scope="session")
def damaged():
    """`damaged(path)`: the bytes of a torch.save archive with a member that fails its CRC-32."""
    return _damaged
