"""Image preprocessing shared by training, evaluation and the service (LA-Transformer's recipe)."""
from typing import Sequence, Tuple

from torchvision import transforms as T

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'build_transform']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(img_size: Sequence[int], train: bool = False) -> T.Compose:
    """Bicubic resize to ``img_size`` (H, W), ImageNet normalisation; random flip only when training."""
    size: Tuple[int, int] = (int(img_size[0]), int(img_size[1]))
    steps = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)]
    if train:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)
