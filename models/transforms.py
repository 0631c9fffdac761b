"""Image preprocessing shared by training, evaluation and the service (LA-Transformer's recipe)."""
from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'ResizeNormalize', 'build_transform']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResizeNormalize:
    """PIL RGB image -> bicubic resize to (H, W) -> ImageNet-normalised (3, H, W) float tensor.

    The same numbers as torchvision's Resize + ToTensor + Normalize, computed with PIL and numpy only: the service
    preprocesses in its request threads, and any torch op there would give each thread its own OpenMP team, which
    slows the model thread's forwards (see app.state).
    """

    def __init__(self, img_size: Sequence[int]) -> None:
        self.size: Tuple[int, int] = (int(img_size[0]), int(img_size[1]))
        self._scale = (1 / (255 * np.asarray(IMAGENET_STD))).astype(np.float32)[:, None, None]
        self._shift = (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)[:, None, None]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        h, w = self.size
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).transpose(2, 0, 1)  # a CHW view of the uint8 pixels
        out = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, self._scale, out=out, dtype=np.float32)  # two passes, no temporaries
        out += self._shift
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


def build_transform(img_size: Sequence[int]) -> T.Compose:
    """Test-time preprocessing: bicubic resize to ``img_size`` (H, W), ImageNet normalisation (training adds its
    augmentations: reid.recipe.train_transform)."""
    return T.Compose([ResizeNormalize(img_size)])
