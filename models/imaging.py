"""The one image decoder: training, evaluation, the CLI and the service all turn files into RGB pixels here, so a
photo gets the same vector from ``amg-reid evaluate`` and from ``/v1/search``."""
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ['ImageError', 'DRAFT_SIDE', 'draft', 'to_rgb', 'open_image', 'as_rgb_image', 'ResizeNormalizeArray',
           'IMAGENET_MEAN', 'IMAGENET_STD']

# JPEGs larger than this on both sides decode at 1/2, 1/4 or 1/8 scale, never below it: a person crop never needs
# more pixels, and a 25 MP photo decodes in a sixteenth of the memory and time. Every reader applies the same rule,
# so a file gives the same pixels (and vector) to training, evaluation and the service.
DRAFT_SIDE = 1024
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(ValueError):
    """An input that is not a readable image."""


def draft(im: Image.Image) -> Image.Image:
    """Before ``load()``: ask the JPEG decoder for its smallest scale that keeps both sides >= ``DRAFT_SIDE``
    (``im.size`` then says the decoded size; other formats are unchanged)."""
    if im.format == 'JPEG':
        im.draft(None, (DRAFT_SIDE, DRAFT_SIDE))
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Decoded image -> RGB as a person sees it: EXIF orientation applied, transparency over white, 16-bit and
    32-bit grey scaled to 8 bits, palette and CMYK converted."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith('I;16') else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / top * 255, 0, 255).astype(np.uint8), mode='L')
    elif im.mode in ('RGBA', 'LA', 'PA') or (im.mode == 'P' and 'transparency' in im.info):
        im = im.convert('RGBA')
        background = Image.new('RGBA', im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert('RGB')


def open_image(path: Union[str, Path]) -> Image.Image:
    """Open an image file as RGB (:func:`to_rgb`), with an error that names the file when it is missing or
    broken."""
    try:
        with Image.open(path) as im:
            draft(im).load()
            return to_rgb(im)
    except FileNotFoundError as e:
        raise ImageError(f'image not found: {path}') from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f'cannot read image {path}: {e}') from e


def as_rgb_image(item) -> Image.Image:
    """What embedders take as one image - a path, a PIL image or an HWC uint8 array - as an RGB PIL image."""
    if isinstance(item, (str, Path)):
        return open_image(item)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] not in (1, 3, 4):
            raise ImageError(f'arrays must be HWC images, got shape {item.shape}')
        return Image.fromarray(item.astype(np.uint8)).convert('RGB')
    if isinstance(item, Image.Image):
        return item.convert('RGB')
    raise ImageError(f'unsupported input type {type(item).__name__}')


class ResizeNormalizeArray:
    """PIL RGB image -> bicubic resize to (H, W) -> ImageNet-normalised (3, H, W) float32 array.

    The same numbers as torchvision's Resize + ToTensor + Normalize, computed with PIL and numpy only: an exported
    model serves without torch, and the service preprocesses in its request threads, where any torch op would give
    each thread its own OpenMP team and slow the model thread's forwards (see app.state).
    """

    def __init__(self, img_size: Sequence[int]) -> None:
        self.size: Tuple[int, int] = (int(img_size[0]), int(img_size[1]))
        self._scale = (1 / (255 * np.asarray(IMAGENET_STD))).astype(np.float32)[:, None, None]
        self._shift = (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)[:, None, None]

    def __call__(self, image: Image.Image) -> np.ndarray:
        h, w = self.size
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).transpose(2, 0, 1)  # a CHW view of the uint8 pixels
        out = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, self._scale, out=out, dtype=np.float32)  # two passes, no temporaries
        out += self._shift
        return out

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'
