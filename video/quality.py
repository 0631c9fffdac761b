"""How useful a crop is for re-identification, from the crop and its frame: its size, its sharpness, whether the
frame border cuts it and how much of it other people's boxes cover. (The visible share of the person, from a
model's visibility head, is multiplied in by video.sightings_from_video when its caller lends one.)"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

__all__ = ['crop_quality', 'clip_box', 'covered_shares', 'FULL_HEIGHT', 'SHARP']

FULL_HEIGHT = 128.0  # px: a crop this tall or taller has all the detail the model's 128x64 or 256x128 input uses
SHARP = 100.0  # variance of the Laplacian at which sharpness scores 0.5 (grey levels^2; noise-free edges score more)
BORDER_PENALTY = 0.4  # a person cut by the frame border is partly missing


def clip_box(box: Tuple[float, float, float, float], width: int, height: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel bounds of an (x, y, w, h) box inside a ``width`` x ``height`` frame."""
    x, y, w, h = box
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    return x0, y0, max(x0, x1), max(y0, y1)


def covered_shares(boxes: np.ndarray) -> np.ndarray:
    """For each of one frame's (N, 4) (x, y, w, h) boxes, the share of its area that the others overlap (their
    overlaps summed, at most 1): the crop holds that much of someone else, or of nobody where they hide it."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    w = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    h = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    overlap = w * h
    np.fill_diagonal(overlap, 0.0)
    area = np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9)
    return np.minimum(overlap.sum(1) / area, 1.0)


def crop_quality(crop: np.ndarray, box: Tuple[float, float, float, float], width: int, height: int,
                 margin: float = 2.0, covered: float = 0.0) -> float:
    """0..1, higher is better: size * sharpness * (BORDER_PENALTY if the box reaches within ``margin`` px of the
    frame border, else 1) * (1 - ``covered``, the share of the box other boxes overlap: :func:`covered_shares`).

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
    return float(size * sharpness * (BORDER_PENALTY if cut else 1.0) * (1.0 - min(max(covered, 0.0), 1.0)))
