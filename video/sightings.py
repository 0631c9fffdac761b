"""Video in, sightings out: decode, detect (or take the user's boxes), track, and keep each track's best crops.

A *sighting* is one person's walk past one camera: one track, its time range, and its best crops. The caller
embeds the crops (pooled, they are the sighting's vector) and stores them; nothing here needs a model (the caller
may lend one's visibility head to the choice of crops: ``visible_share``).
"""
from __future__ import annotations

import datetime as dt
import heapq
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
from PIL import Image

from .decode import frame_time, frames, probe
from .detect import BackgroundDetector
from .errors import VideoError
from .mot import read_mot
from .quality import clip_box, covered_shares, crop_quality
from .track import Tracker

__all__ = ['Crop', 'Sighting', 'sightings_from_video', 'VideoError', 'STAGES']

Box = Tuple[float, float, float, float]
STAGES = ('decode', 'detect', 'track', 'crop', 'choose')  # the keys of sightings_from_video's ``timings``


@dataclass
class Crop:
    image: Image.Image  # RGB crop of the person
    frame: int  # frame number in the video (0-based)
    time: dt.datetime  # recording start + frame / fps (timezone-aware UTC)
    box: Box  # x, y, w, h in pixels of the frame
    # 0..1, higher is better: size, sharpness, not cut by the frame border nor covered by others (x the visible share)
    quality: float
    visible: Optional[float] = None  # the share of the person the visibility head sees (None: not asked)


@dataclass
class Sighting:
    camera_id: str
    track_id: int
    video: str  # the source video's name or path
    first_time: dt.datetime
    last_time: dt.datetime
    crops: List[Crop]  # best first, at most max_crops
    frames: int  # how many frames the track spans


@dataclass
class _Track:
    first: int
    last: int
    # a min-heap of (quality, frame, tie-breaker, Crop): the worst kept crop on top, replaced by a better one
    best: list = field(default_factory=list)


def _given_boxes(boxes) -> Mapping[int, np.ndarray]:
    """The user's boxes as ``{frame (1-based): (N, 6) of (id, x, y, w, h, conf)}``."""
    if isinstance(boxes, (str, Path)):
        return read_mot(boxes)
    if not isinstance(boxes, Mapping):
        raise VideoError(f'boxes must be a MOT file path or {{frame: array of (id, x, y, w, h, conf)}}, '
                         f'got {type(boxes).__name__}')
    checked = {}
    for frame, rows in boxes.items():
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] < 6:
            raise VideoError(f'boxes of frame {frame}: expected rows of (id, x, y, w, h, conf), got shape '
                             f'{rows.shape}')
        checked[int(frame)] = rows
    return checked


def _by_visible_share(crops: List[Crop], visible_share: Callable[[List[Image.Image]], np.ndarray],
                      keep: int) -> List[Crop]:
    """The best ``keep`` of ``crops`` (best first) once each crop's quality is multiplied by its visible share."""
    shares = np.asarray(visible_share([c.image for c in crops]), dtype=np.float64).reshape(-1)
    if len(shares) != len(crops) or not np.isfinite(shares).all() or ((shares < -1e-6) | (shares > 1 + 1e-6)).any():
        raise ValueError(f'visible_share gave {len(shares)} values for {len(crops)} crops: expected one share in '
                         f'0..1 each, got {np.round(shares[:8], 3).tolist()}')
    for crop, share in zip(crops, np.clip(shares, 0.0, 1.0)):
        crop.visible = float(share)
        crop.quality = float(crop.quality * share)
    return sorted(crops, key=lambda c: (-c.quality, c.frame))[:keep]


def sightings_from_video(path: Union[str, Path], camera_id: str, start_time: dt.datetime,
                         boxes: Union[None, str, Path, Mapping[int, np.ndarray]] = None, *, max_crops: int = 8,
                         progress: Optional[Callable[[int, Optional[int]], None]] = None,
                         cancelled: Optional[Callable[[], bool]] = None,
                         detector: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                         tracker: Optional[Tracker] = None, min_frames: int = 3, progress_every: int = 10,
                         on_tracks: Optional[Callable[[int, np.ndarray], None]] = None,
                         timings: Optional[Dict[str, float]] = None,
                         visible_share: Optional[Callable[[List[Image.Image]], np.ndarray]] = None,
                         candidates: Optional[int] = None) -> Iterator[Sighting]:
    """Decode ``path`` streaming (never the whole video in memory), detect, track, and yield each track as a
    Sighting once it ends (the tracker has given it up), the rest at the end of the video.

    Args:
        path: the video file (any container and codec FFmpeg decodes).
        camera_id: copied into each sighting.
        start_time: when the recording's first frame was taken (naive: UTC).
        boxes: the user's detector's boxes: a MOT Challenge file path, or ``{frame (1-based): (N, 6) array of (id,
            x, y, w, h, conf)}`` as :func:`video.mot.read_mot` gives (ids are ignored: the boxes are tracked
            again); None: the built-in :class:`video.detect.BackgroundDetector`.
        max_crops: crops kept per sighting, the best by :func:`video.quality.crop_quality` (times the visible
            share, with ``visible_share``).
        progress: called as ``progress(done_frames, total_frames or None)`` every ``progress_every`` frames and at
            the end.
        cancelled: checked before each frame; when it returns True the generator stops, yielding nothing more
            (no half sighting: the tracks still open are dropped).
        detector: a callable from an RGB frame to (N, 5) of (x, y, w, h, conf), used when ``boxes`` is None
            (default: a new BackgroundDetector).
        tracker: default: ``Tracker(fps)`` (ByteTrack).
        min_frames: tracks spanning fewer frames are dropped (noise that the tracker kept).
        on_tracks: called as ``on_tracks(frame, tracked)`` for each frame (0-based) with its (M, 6) array of
            (track_id, x, y, w, h, conf): every tracked box, for a frame viewer or an evaluation.
        timings: if given, seconds spent per stage (:data:`STAGES`) are added into it.
        visible_share: a model's visibility head: crops -> (n,) the share of the person each shows, 0..1 (e.g. the
            mean over parts of its per-part visibility). Given, each track keeps its ``candidates`` best crops by
            the frame's measures, and when it ends they are passed in one call and their quality multiplied by it;
            the best ``max_crops`` of those stay (the ``choose`` stage).
        candidates: crops kept per track for ``visible_share`` to choose among (default ``2 * max_crops``;
            without ``visible_share``: ``max_crops``).

    Raises:
        VideoError: a file that cannot be decoded, or bad MOT data (the message names the line).
    """
    if max_crops < 1:
        raise ValueError('max_crops must be at least 1')
    if visible_share is None:
        candidates = max_crops
    elif candidates is None:
        candidates = 2 * max_crops
    elif candidates < max_crops:
        raise ValueError(f'candidates ({candidates}) must be at least max_crops ({max_crops})')
    given = None if boxes is None else _given_boxes(boxes)
    info = probe(path)
    detector = detector if detector is not None else (BackgroundDetector() if given is None else None)
    tracker = tracker if tracker is not None else Tracker(info.fps)
    video = str(path)
    clock = timings if timings is not None else {}
    for stage in STAGES:
        clock.setdefault(stage, 0.0)
    tracks: Dict[int, _Track] = {}
    ties = itertools.count()  # heap entries of equal quality and frame never compare their Crops
    empty = np.empty((0, 5))

    def sighting(track_id: int, track: _Track) -> Optional[Sighting]:
        if track.last - track.first + 1 < min_frames or not track.best:
            return None
        crops = [entry[3] for entry in sorted(track.best, key=lambda e: (-e[0], e[1]))]
        if visible_share is not None:
            began = time.perf_counter()
            crops = _by_visible_share(crops, visible_share, max_crops)
            clock['choose'] += time.perf_counter() - began
        return Sighting(camera_id=camera_id, track_id=track_id, video=video,
                        first_time=frame_time(start_time, track.first, info.fps),
                        last_time=frame_time(start_time, track.last, info.fps), crops=crops,
                        frames=track.last - track.first + 1)

    decoded = frames(path, start_time)
    done = 0
    try:
        while True:
            if cancelled is not None and cancelled():
                return
            t0 = time.perf_counter()
            frame = next(decoded, None)
            t1 = time.perf_counter()
            clock['decode'] += t1 - t0
            if frame is None:
                break
            image, index = frame.image, frame.index
            if given is None:
                found = detector(image)
            else:
                found = given.get(index + 1)
                found = empty if found is None else found[:, 1:6]
            t2 = time.perf_counter()
            clock['detect'] += t2 - t1
            tracked = tracker.update(found, image)
            t3 = time.perf_counter()
            clock['track'] += t3 - t2
            if on_tracks is not None:
                on_tracks(index, tracked)
            height, width = image.shape[:2]
            covered = covered_shares(tracked[:, 1:5])
            for (track_id, x, y, w, h, _), share in zip(tracked, covered):
                box = (float(x), float(y), float(w), float(h))
                x0, y0, x1, y1 = clip_box(box, width, height)
                if x1 <= x0 or y1 <= y0:
                    continue
                pixels = image[y0:y1, x0:x1]
                quality = crop_quality(pixels, box, width, height, covered=float(share))
                track = tracks.setdefault(int(track_id), _Track(first=index, last=index))
                track.last = index
                if len(track.best) < candidates or quality > track.best[0][0]:
                    crop = Crop(image=Image.fromarray(pixels.copy()), frame=index, time=frame.time, box=box,
                                quality=quality)
                    entry = (quality, index, next(ties), crop)
                    if len(track.best) < candidates:
                        heapq.heappush(track.best, entry)
                    else:
                        heapq.heapreplace(track.best, entry)
            clock['crop'] += time.perf_counter() - t3
            done = index + 1
            if progress is not None and done % progress_every == 0:
                progress(done, info.frames)
            # a track the tracker has given up on can never continue: it is a finished sighting
            for track_id in [t for t, track in tracks.items() if index - track.last > tracker.max_lost_frames]:
                finished = sighting(track_id, tracks.pop(track_id))
                if finished is not None:
                    yield finished
        if progress is not None:
            progress(done, info.frames)
        for track_id in sorted(tracks, key=lambda t: tracks[t].first):
            finished = sighting(track_id, tracks[track_id])
            if finished is not None:
                yield finished
    finally:
        decoded.close()
