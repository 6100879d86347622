"""An upload -> the image's pixels: the request body within its size limit, the multipart field
`file` or the raw body, decoded from memory at full precision.

Decoding follows `maskrcnn.data.images.load_image` (which reads paths): PIL for PNG, JPEG, BMP,
WebP, ..., tifffile for TIFF, told apart by the bytes' signature rather than a file name; a
16-bit image stays 16-bit; and an image whose header claims more pixels than the limit is
refused before a single pixel is decoded (a small compressed file can claim gigapixels).
"""

import io
import re

import numpy as np
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from maskrcnn.data.images import ImageTooLargeError, read_tiff, read_with_pil

FIELD = "file"  # the multipart field that holds the image
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
UNREADABLE = "the upload is not an image PIL or tifffile can read"


class RequestError(Exception):
    """A request the server answers with an error: HTTP `status`, the metrics' error `kind`
    and a one-line message naming the problem (the JSON body's "error")."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _too_large(size: str, max_bytes: int) -> RequestError:
    return RequestError(
        413,
        "too_large",
        f"the request body is {size}, over the server's limit of {max_bytes} bytes (--max-body-mb)",
    )


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The uploaded file's bytes: the multipart field `file`, or the whole body for any other
    content type. A body over `max_bytes` is refused from its Content-Length before it is read,
    and, sent without one (chunked), as soon as what has arrived passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(
                400, "bad_request", f"the Content-Length header {declared!r} is not a byte count"
            )
        if int(declared) > max_bytes:
            raise _too_large(f"{int(declared)} bytes", max_bytes)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(f"at least {len(body)} bytes (sent without a length)", max_bytes)
    except ClientDisconnect:
        raise RequestError(400, "bad_request", "the client went away before sending the whole body") from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data = (
        await _form_file(request.headers, bytes(body))
        if content_type == "multipart/form-data"
        else bytes(body)
    )
    if not data:
        raise RequestError(
            400,
            "bad_request",
            f"the upload is empty: send the image as the request body or the form field '{FIELD}'",
        )
    return data


async def _form_file(headers: Headers, body: bytes) -> bytes:
    async def replay():
        yield body

    try:
        form = await MultiPartParser(headers, replay(), max_files=8, max_fields=32).parse()
    except (MultiPartException, ValueError) as error:
        message = getattr(error, "message", str(error))
        raise RequestError(400, "bad_request", f"the multipart form cannot be read: {message}") from None
    try:
        upload = form.get(FIELD)
        if upload is None:
            fields = ", ".join(repr(name) for name in form.keys()) or "none"
            raise RequestError(
                400,
                "bad_request",
                f"the multipart form has no field '{FIELD}' (the image); its fields: {fields}",
            )
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "bad_request", f"the form field '{FIELD}' is text, not a file")
        return await upload.read()
    finally:
        await form.close()


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> pixels (H, W) or (H, W, C) in the file's own type, as `load_image`
    returns them. Raises RequestError: 413 when the header claims more than `max_pixels`
    (width x height x planes; 0: no limit), 400 when the bytes are no image."""
    try:
        read = read_tiff if data[:4] in TIFF_SIGNATURES else read_with_pil
        return read(io.BytesIO(data), lambda w, h, planes: check_pixels(w, h, planes, max_pixels))
    except RequestError:
        raise
    except ImageTooLargeError as error:  # over PIL's own guard, where the program keeps it
        raise RequestError(413, "too_large", _one_line(error)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise RequestError(400, "bad_request", f"{UNREADABLE}: {_one_line(error)}") from None


def check_pixels(width: int, height: int, planes: int, max_pixels: int) -> None:
    """Refuse (413) an image of more than `max_pixels` pixels, width x height x planes (0: no limit)."""
    pixels = width * height * planes
    if max_pixels and pixels > max_pixels:
        size = f"{width} x {height} pixels" + (f" x {planes} planes" if planes > 1 else "")
        raise RequestError(
            413,
            "too_large",
            f"the image is {size} ({pixels} pixels), over the server's limit of {max_pixels} pixels "
            "(--max-image-pixels)",
        )


def _one_line(error: BaseException) -> str:
    # PIL names the file it could not identify; here that is an in-memory buffer, of no use to a client.
    message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error))
    return " ".join(message.split()) or type(error).__name__
