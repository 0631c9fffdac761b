"""How useful a crop is for re-identification, from the crop alone: its size, its sharpness, and whether the frame
border cuts it. (The visible share of the person, from the model's visibility head, is the caller's to add.)"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

__all__ = ['crop_quality', 'clip_box', 'FULL_HEIGHT', 'SHARP']

FULL_HEIGHT = 128.0  # px: a crop this tall or taller has all the detail the model's 128x64 or 256x128 input uses
SHARP = 100.0  # variance of the Laplacian at which sharpness scores 0.5 (grey levels^2; noise-free edges score more)
BORDER_PENALTY = 0.4  # a person cut by the frame border is partly missing


def clip_box(box: Tuple[float, float, float, float], width: int, height: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel bounds of an (x, y, w, h) box inside a ``width`` x ``height`` frame."""
    x, y, w, h = box
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    return x0, y0, max(x0, x1), max(y0, y1)


def crop_quality(crop: np.ndarray, box: Tuple[float, float, float, float], width: int, height: int,
                 margin: float = 2.0) -> float:
    """0..1, higher is better: size * sharpness * (BORDER_PENALTY if the box reaches within ``margin`` px of the
    frame border, else 1).

    size is ``min(1, h / FULL_HEIGHT)``; sharpness is ``v / (v + SHARP)`` with ``v`` the variance of the Laplacian
    of the crop's grey levels (the usual focus measure: blur removes high frequencies).

    Args:
        crop: (h, w, 3) uint8 RGB pixels of the box.
        box: (x, y, w, h) in pixels of the frame, as detected (it may reach beyond the frame).
        width, height: the frame's size.
    """
    if crop.size == 0:
        return 0.0
    x, y, w, h = box
    size = min(1.0, crop.shape[0] / FULL_HEIGHT)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    variance = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    sharpness = variance / (variance + SHARP)
    cut = x < margin or y < margin or x + w > width - margin or y + h > height - margin
    return float(size * sharpness * (BORDER_PENALTY if cut else 1.0))
