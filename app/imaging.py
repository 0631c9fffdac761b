"""Uploaded image validation: everything is checked before anything is written, and a request's decoding work is
bounded before any of it starts (header probes first, then the pixels)."""
import io
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from models.imaging import draft, to_rgb

__all__ = ['DecodedImage', 'ImageRejected', 'decode_upload', 'decode_request', 'probe_request', 'decode_probed',
           'request_pixels', 'has_control_characters']

MAX_NAME_CHARS = 255  # the database keeps up to 512
ACCEPTED_FORMATS = {'JPEG', 'PNG', 'BMP', 'WEBP', 'TIFF', 'GIF'}


def has_control_characters(text: str) -> bool:
    # PostgreSQL text cannot hold NUL and Milvus expressions cannot quote control characters: names and labels
    # need neither
    return any(unicodedata.category(ch) == 'Cc' for ch in text)


_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageRejected(ValueError):
    """An upload that is not an acceptable image; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DecodedImage:
    image: Any  # RGB PIL image, EXIF orientation applied; or what ``prepare`` made of it (a model input)
    data: bytes  # what is stored: the original JPEG/PNG bytes, other formats re-encoded as PNG
    ext: str
    filename: str
    prepare_seconds: float = 0.0


@dataclass
class _Probed:
    data: bytes
    name: str
    fmt: str
    size: Tuple[int, int]  # as it will decode (large JPEGs at reduced scale)


def _probe(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> _Probed:
    """Checks that need only the header: name, bytes, format, decoded size."""
    name = filename or 'upload'
    if len(name) > MAX_NAME_CHARS:
        raise ImageRejected(f'{name[:40]}...: file name longer than {MAX_NAME_CHARS} characters')
    if has_control_characters(name):
        raise ImageRejected(f'{name!r}: control characters are not allowed in a file name')
    if not data:
        raise ImageRejected(f'{name}: empty file (0 bytes)')
    if len(data) > max_bytes:
        raise ImageRejected(f'{name}: {len(data)} bytes exceeds the limit of {max_bytes}', status=413)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            w, h = draft(probe).size
    except _UNREADABLE as e:
        raise ImageRejected(f'{name}: not a readable image ({e.__class__.__name__})') from None
    if fmt not in ACCEPTED_FORMATS:
        raise ImageRejected(f'{name}: unsupported image format {fmt}')
    if w * h > max_pixels:
        raise ImageRejected(f'{name}: {w}x{h} pixels exceeds the limit of {max_pixels}', status=413)
    return _Probed(data, name, fmt, (w, h))


def _decode(p: _Probed) -> DecodedImage:
    try:
        with Image.open(io.BytesIO(p.data)) as im:
            draft(im).load()  # truncated files fail here
            rgb = to_rgb(im)
    except _UNREADABLE as e:
        raise ImageRejected(f'{p.name}: corrupt or truncated image ({e})') from None
    if min(rgb.size) < 8:
        raise ImageRejected(f'{p.name}: image is too small ({rgb.size[0]}x{rgb.size[1]})')
    if p.fmt in ('JPEG', 'PNG'):
        return DecodedImage(rgb, p.data, 'jpg' if p.fmt == 'JPEG' else 'png', p.name)
    buf = io.BytesIO()
    rgb.save(buf, format='PNG')
    return DecodedImage(rgb, buf.getvalue(), 'png', p.name)


def decode_upload(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> DecodedImage:
    """One file: checked from its header, then decoded (RGB, EXIF applied); :class:`ImageRejected` says why not."""
    return _decode(_probe(data, filename, max_bytes, max_pixels))


def probe_request(files: Sequence[Tuple[bytes, str]], max_bytes: int, max_pixels: int,
                  max_request_pixels: int) -> List[_Probed]:
    """Every header of one request checked, and the decoded pixels of all files together bounded by
    ``max_request_pixels`` (413), before any file is decoded."""
    probed = [_probe(data, name, max_bytes, max_pixels) for data, name in files]
    total = request_pixels(probed)
    if total > max_request_pixels:
        raise ImageRejected(f'{len(probed)} images of {total} pixels in all exceed the limit of '
                            f'{max_request_pixels} decoded pixels per request', status=413)
    return probed


def request_pixels(probed: Sequence[_Probed]) -> int:
    return sum(w * h for w, h in (p.size for p in probed))


def decode_probed(probed: Sequence[_Probed], prepare: Optional[Callable[[Image.Image], Any]] = None) -> List[
        DecodedImage]:
    """``prepare`` (a search: the model's preprocessing) replaces each decoded image as soon as it is decoded, so a
    queued request holds model inputs, not full-size pixels."""
    decoded = []
    for p in probed:
        item = _decode(p)
        if prepare is not None:
            start = time.perf_counter()
            item.image = prepare(item.image)
            item.prepare_seconds = time.perf_counter() - start
        decoded.append(item)
    return decoded


def decode_request(files: Sequence[Tuple[bytes, str]], max_bytes: int, max_pixels: int, max_request_pixels: int,
                   prepare: Optional[Callable[[Image.Image], Any]] = None) -> List[DecodedImage]:
    """All files of one request: :func:`probe_request`, then :func:`decode_probed`."""
    return decode_probed(probe_request(files, max_bytes, max_pixels, max_request_pixels), prepare)
