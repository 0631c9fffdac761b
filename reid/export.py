"""Exports that need the data: the INT8 model calibrated on training images (``train``/``prune --int8``, ``amg-reid
export --int8``, train and prune jobs with ``int8``)."""
import random
from pathlib import Path
from typing import Sequence, Union

from models.quantize import export_int8

from .datasets import ImageRecord

__all__ = ['export_int8_calibrated', 'CALIBRATION_IMAGES']

CALIBRATION_IMAGES = 300


def export_int8_calibrated(checkpoint: Union[str, Path], records: Sequence[ImageRecord],
                           count: int = CALIBRATION_IMAGES, seed: int = 0) -> Path:
    """``CHECKPOINT.int8.onnx``, calibrated on ``count`` of ``records`` drawn at random (every identity's look,
    occluded and not, in proportion)."""
    paths = [r.path for r in records]
    return export_int8(checkpoint, random.Random(seed).sample(paths, min(count, len(paths))))
