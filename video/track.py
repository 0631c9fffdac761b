"""Boxes to tracks: ByteTrack from the ``trackers`` package (Roboflow's maintained re-implementation), wrapped to
take and give MOT-style (x, y, w, h) arrays and to say when a track has ended; given the frames, its ids are given
back by look after people cross (video.appearance)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import supervision as sv
from trackers import GIoU, ByteTrackTracker

from .appearance import CrossingResolver

__all__ = ['Tracker', 'track_all']


class Tracker:
    """One video's tracker: feed it each frame's boxes in order.

    Args:
        fps: the video's frame rate (ByteTrack's memory of lost tracks is in time).
        lost_seconds: how long a track that sees no box is kept before it ends (a person hidden by an occluder or
            another person for less than this keeps their id).
        activation: least confidence of a box that starts a track.
        high_confidence: boxes at or above this are matched first; those below only continue existing tracks.
        min_giou: least generalized IoU (-1..1) of a box with a track's predicted box to continue it. GIoU, not
            IoU: it still scores boxes that no longer overlap the prediction, so a track survives a person
            emerging from behind an occluder or another person a little off its predicted path (on the synthetic
            video: tracking IDF1 on the built-in detector's boxes 0.62-0.87 per camera with IoU >= 0.1, 0.77-0.88
            with GIoU >= -0.5; unchanged 0.99 on ground-truth boxes).
        min_frames: frames in a row a track needs before it gets an id (filters one-frame noise).
        by_look: give ids back by look after people cross (video.appearance.CrossingResolver), for the frames
            :meth:`update` is given.
    """

    def __init__(self, fps: float, lost_seconds: float = 2.0, activation: float = 0.5, high_confidence: float = 0.5,
                 min_giou: float = -0.5, min_frames: int = 2, by_look: bool = True):
        # ByteTrack counts its lost-track buffer in frames at 30 fps and scales it by frame_rate / 30
        self._tracker = ByteTrackTracker(lost_track_buffer=max(1, round(lost_seconds * 30)), frame_rate=fps,
                                         track_activation_threshold=activation, high_conf_det_threshold=high_confidence,
                                         minimum_iou_threshold=min_giou, minimum_consecutive_frames=min_frames,
                                         iou=GIoU())
        self.max_lost_frames: int = int(self._tracker.maximum_frames_without_update)
        self.resolver = CrossingResolver(self.max_lost_frames) if by_look else None

    def update(self, boxes: np.ndarray, image: Optional[np.ndarray] = None) -> np.ndarray:
        """Track one frame.

        Args:
            boxes: (N, 5) of (x, y, w, h, conf) in pixels.
            image: the frame (H, W, 3) uint8 RGB, for the looks that give ids back after a crossing; give it with
                every frame or with none (then the tracker's ids as they are).

        Returns:
            (M, 6) float64 of (track_id, x, y, w, h, conf) for the boxes that belong to a track with an id
            (ids start at 1; a box that starts no track or whose track is too young to have an id is left out).
            The boxes are the detector's, not the tracker's smoothed ones.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], 1)
        tracked = self._tracker.update(sv.Detections(xyxy=xyxy, confidence=boxes[:, 4]))
        keep = tracked.tracker_id >= 0
        if not keep.any():
            rows = np.empty((0, 6))
        else:
            xyxy = tracked.xyxy[keep]
            ids = tracked.tracker_id[keep].astype(np.float64) + 1  # MOT ids are positive; trackers' start at 0
            rows = np.concatenate([ids[:, None], xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2],
                                   tracked.confidence[keep][:, None]], 1)
        return rows if self.resolver is None or image is None else self.resolver(rows, image)


def track_all(boxes_by_frame: dict, fps: float, frames: int, **kwargs) -> dict:
    """Track precomputed boxes ``{frame (1-based): (N, >= 5) of (x, y, w, h, conf)}`` over ``frames`` frames:
    ``{frame: (M, 6) of (track_id, x, y, w, h, conf)}`` (frames without a tracked box left out)."""
    tracker = Tracker(fps, **kwargs)
    out = {}
    empty = np.empty((0, 5))
    for frame in range(1, frames + 1):
        tracked = tracker.update(boxes_by_frame.get(frame, empty))
        if len(tracked):
            out[frame] = tracked
    return out

