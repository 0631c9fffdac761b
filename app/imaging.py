"""Uploaded image validation: everything is checked before anything is written."""
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from models.imaging import to_rgb

__all__ = ['DecodedImage', 'ImageRejected', 'decode_upload']

MAX_NAME_CHARS = 255  # the database keeps up to 512
ACCEPTED_FORMATS = {'JPEG', 'PNG', 'BMP', 'WEBP', 'TIFF', 'GIF'}


class ImageRejected(ValueError):
    """An upload that is not an acceptable image; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    data: bytes  # what is stored: the original JPEG/PNG bytes, other formats re-encoded as PNG
    ext: str
    filename: str


def decode_upload(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> DecodedImage:
    name = filename or 'upload'
    if len(name) > MAX_NAME_CHARS:
        raise ImageRejected(f'{name[:40]}...: file name longer than {MAX_NAME_CHARS} characters')
    if not data:
        raise ImageRejected(f'{name}: empty file (0 bytes)')
    if len(data) > max_bytes:
        raise ImageRejected(f'{name}: {len(data)} bytes exceeds the limit of {max_bytes}', status=413)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            w, h = probe.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRejected(f'{name}: not a readable image ({e.__class__.__name__})') from None
    if fmt not in ACCEPTED_FORMATS:
        raise ImageRejected(f'{name}: unsupported image format {fmt}')
    if w * h > max_pixels:
        raise ImageRejected(f'{name}: {w}x{h} pixels exceeds the limit of {max_pixels}', status=413)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # truncated files fail here
            rgb = to_rgb(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRejected(f'{name}: corrupt or truncated image ({e})') from None
    if min(rgb.size) < 8:
        raise ImageRejected(f'{name}: image is too small ({rgb.size[0]}x{rgb.size[1]})')
    if fmt in ('JPEG', 'PNG'):
        return DecodedImage(rgb, data, 'jpg' if fmt == 'JPEG' else 'png', name)
    buf = io.BytesIO()
    rgb.save(buf, format='PNG')
    return DecodedImage(rgb, buf.getvalue(), 'png', name)
