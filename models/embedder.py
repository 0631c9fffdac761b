"""A small user-facing API: load a checkpoint once, embed images in batches (like torchreid's FeatureExtractor)."""
import logging
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .checkpoints import PathLike, load_model
from .la_transformer import LATransformer
from .transforms import build_transform

__all__ = ['Embedder', 'ImageInput', 'open_image', 'ImageError']

_logger = logging.getLogger(__name__)
ImageInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


class ImageError(ValueError):
    """An input that is not a readable image."""


def open_image(path: PathLike) -> Image.Image:
    """Open an image file as RGB, with an error that names the file when it is missing or broken."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert('RGB')
    except FileNotFoundError as e:
        raise ImageError(f'image not found: {path}') from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f'cannot read image {path}: {e}') from e


class Embedder:
    """Embed person crops with an LA-Transformer.

    Args:
        model: a checkpoint path (any format :func:`models.checkpoints.load_model` reads) or a model.
        model_name: needed only for foreign checkpoints without an architecture record.
        device: 'cpu', 'cuda', ...
        batch_size: images per forward pass.
        flip: average the embeddings of each image and its mirror (then re-normalise).

    Call it with a path, a PIL image, an HWC uint8 array, a (C, H, W) / (B, C, H, W) normalised tensor, or a list of
    those; it returns a float32 array (B, D) of unit-norm embeddings.

    Example::

        embedder = Embedder('runs/demo/best.safetensors')
        xb = embedder(['a.jpg', 'b.jpg'])   # (2, parts * dim)
    """

    def __init__(self, model: Union[PathLike, LATransformer], model_name: Optional[str] = None,
                 device: Union[str, torch.device] = 'cpu', batch_size: int = 64, flip: bool = False) -> None:
        self.model = model if isinstance(model, LATransformer) else load_model(model, model_name, device=device)
        self.model.eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.flip = flip
        self.transform = build_transform(self.model.img_size)

    @property
    def dim(self) -> int:
        return self.model.embedding_dim

    def preprocess(self, item: ImageInput) -> torch.Tensor:
        """One input -> a normalised (3, H, W) tensor (tensors are taken as already normalised)."""
        if isinstance(item, torch.Tensor):
            return item
        if isinstance(item, (str, Path)):
            item = open_image(item)
        elif isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] not in (1, 3, 4):
                raise ImageError(f'arrays must be HWC images, got shape {item.shape}')
            item = Image.fromarray(item.astype(np.uint8)).convert('RGB')
        elif isinstance(item, Image.Image):
            item = item.convert('RGB')
        else:
            raise ImageError(f'unsupported input type {type(item).__name__}')
        return self.transform(item)

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised batch (B, 3, H, W) -> (B, D) embeddings (flip-averaged when ``flip``)."""
        x = x.to(self.device)
        f = self.model.embed(x)
        if self.flip:
            f = torch.nn.functional.normalize(f + self.model.embed(x.flip(-1)), dim=1)
        return f

    def __call__(self, inputs: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            items: List[ImageInput] = list(inputs)
        elif isinstance(inputs, (list, tuple)):
            items = list(inputs)
        else:
            items = [inputs]
        out = [self.embed_tensor(torch.stack([self.preprocess(i) for i in chunk])).cpu()
               for chunk in _chunks(items, self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
