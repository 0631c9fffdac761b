import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from models.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from reid.recipe import train_transform


def test_numpy_preprocessing_equals_torchvision_resize_totensor_normalize():
    rng = np.random.default_rng(0)
    reference = T.Compose([T.Resize((224, 112), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for size in [(128, 64), (224, 112), (37, 300)]:
        image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        ours = build_transform((224, 112))(image)
        assert ours.shape == (3, 224, 112) and ours.dtype == torch.float32 and ours.is_contiguous()
        torch.testing.assert_close(ours, reference(image), atol=1e-5, rtol=0)


def test_training_transform_flips_some_images():
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (128, 1, 3)))
    transform = train_transform((128, 64))
    torch.manual_seed(0)
    firsts = {float(transform(image)[0, 0, 0]) for _ in range(20)}
    assert len(firsts) == 2  # left edge dark or (flipped) bright
