"""Image preprocessing shared by training, evaluation and the service (LA-Transformer's recipe), as torch tensors;
the numbers are :class:`models.imaging.ResizeNormalizeArray`'s (torch-free, for exported models)."""
from typing import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from .imaging import IMAGENET_MEAN, IMAGENET_STD, ResizeNormalizeArray

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'ResizeNormalize', 'build_transform']


class ResizeNormalize(ResizeNormalizeArray):
    """PIL RGB image -> bicubic resize to (H, W) -> ImageNet-normalised (3, H, W) float tensor."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(super().__call__(image))


def build_transform(img_size: Sequence[int]) -> T.Compose:
    """Test-time preprocessing: bicubic resize to ``img_size`` (H, W), ImageNet normalisation (training adds its
    augmentations: reid.recipe.train_transform)."""
    return T.Compose([ResizeNormalize(img_size)])
