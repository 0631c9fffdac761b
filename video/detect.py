"""A person detector that needs no weights, for static cameras: background subtraction (OpenCV's MOG2) and the
shape of what moves.

Good for a fixed camera with people walking apart from each other; not for a moving camera, crowds (people who
walk together are one blob, so one box or none) or people standing still for longer than the background model's
memory (they fade into the background). docs/video.md says how good it is, measured by ``python -m bench.video``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

__all__ = ['BackgroundDetector']


@dataclass
class BackgroundDetector:
    """Boxes of moving, standing-person-shaped blobs, one frame after the other (the detector keeps state: the
    background model; make one per video).

    Args:
        history: frames the background model remembers (MOG2's ``history``).
        var_threshold: squared Mahalanobis distance at which a pixel is foreground (MOG2's ``varThreshold``).
        min_height: shortest box kept, as a share of the frame height.
        max_height: tallest box kept, as a share of the frame height.
        aspect: (min, max) height / width of a standing person's box.
        min_fill: least share of its box a blob fills (a person fills about half; noise and shadows less).
        work_height: frames taller than this are shrunk to it before subtraction (speed, and kernels that fit a
            person whatever the resolution; boxes are scaled back).
        warmup: frames at the start that only teach the background model (no boxes: everything moves at first).
        max_gap: blobs one above the other are one person when the gap between them is at most this share of their
            joint height (clothes the colour of the background split a figure into head, torso and legs).
    """
    history: int = 300
    var_threshold: float = 24.0
    min_height: float = 0.12
    max_height: float = 0.95
    aspect: Tuple[float, float] = (1.3, 7.0)
    min_fill: float = 0.3
    work_height: int = 288
    warmup: int = 5
    max_gap: float = 0.25

    def __post_init__(self):
        assert self.work_height > 0, 'work_height must be positive'
        self.scale = 1.0
        self._subtractor = cv2.createBackgroundSubtractorMOG2(history=self.history, varThreshold=self.var_threshold,
                                                              detectShadows=True)
        self._frames = 0
        # tall kernels: join a person's head, torso and legs, which differ from the background by different amounts
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 11))

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """The cleaned foreground mask (uint8 0/255) of one RGB frame, shrunk to at most ``work_height`` rows (by
        ``self.scale``); updates the background model."""
        self.scale = min(1.0, self.work_height / image.shape[0])
        small = image if self.scale == 1 else cv2.resize(image, None, fx=self.scale, fy=self.scale,
                                                         interpolation=cv2.INTER_AREA)
        mask = self._subtractor.apply(small)
        self._frames += 1
        # MOG2 marks shadows 127: they are not people
        _, mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Boxes in one RGB frame: array (N, 5) float32 of (x, y, w, h, conf) in pixels of the frame; conf is the
        share of its box the blob fills, clipped to 0..1."""
        mask = self.foreground(image)
        if self._frames <= self.warmup:
            return np.empty((0, 5), np.float32)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        stats = _stack_parts(stats[1:].astype(np.float32), self.max_gap)  # 0 is the background
        if not len(stats):
            return np.empty((0, 5), np.float32)
        x, y, w, h, area = stats.T
        frame_h = mask.shape[0]
        fill = area / (w * h)
        keep = ((h >= self.min_height * frame_h) & (h <= self.max_height * frame_h)
                & (h >= self.aspect[0] * w) & (h <= self.aspect[1] * w) & (fill >= self.min_fill))
        boxes = np.stack([x, y, w, h], 1)[keep] / self.scale
        return np.concatenate([boxes, np.clip(fill[keep], 0, 1)[:, None]], 1).astype(np.float32)


def _stack_parts(stats: np.ndarray, max_gap: float) -> np.ndarray:
    """Join blobs stacked one above the other (horizontal overlap at least half the narrower one's width, vertical
    gap at most ``max_gap`` of the joint height) into one, until none is left to join. ``stats``: (N, 5) of (x, y,
    w, h, area) as cv2.connectedComponentsWithStats gives them."""
    blobs = [list(row) for row in stats]
    joined = True
    while joined and len(blobs) > 1:
        joined = False
        for i in range(len(blobs)):
            for j in range(i + 1, len(blobs)):
                (xa, ya, wa, ha, aa), (xb, yb, wb, hb, ab) = blobs[i], blobs[j]
                overlap = min(xa + wa, xb + wb) - max(xa, xb)
                top, bottom = min(ya, yb), max(ya + ha, yb + hb)
                gap = max(ya, yb) - min(ya + ha, yb + hb)
                if overlap >= 0.5 * min(wa, wb) and gap <= max_gap * (bottom - top):
                    left, right = min(xa, xb), max(xa + wa, xb + wb)
                    blobs[i] = [left, top, right - left, bottom - top, aa + ab]
                    del blobs[j]
                    joined = True
                    break
            if joined:
                break
    return np.asarray(blobs, dtype=np.float32).reshape(-1, 5)
