"""Frames of a video file, one at a time (PyAV, FFmpeg's decoders): never the whole video in memory."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import av
import numpy as np

from .errors import VideoError

__all__ = ['Frame', 'VideoInfo', 'probe', 'frames', 'frame_time', 'read_frame']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based, in decoding order
    time: dt.datetime  # recording start + index / fps
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: Optional[int]  # as the container says; None when it does not


def frame_time(start_time: dt.datetime, index: int, fps: float) -> dt.datetime:
    """``start_time`` (naive times are taken as UTC) + ``index / fps``, timezone-aware UTC."""
    if start_time.tzinfo is None:
        start_time = start_time.replace(tzinfo=dt.timezone.utc)
    return (start_time + dt.timedelta(seconds=index / fps)).astimezone(dt.timezone.utc)


def _open(path: Union[str, Path]):
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f'cannot open video {path}: {e}') from e
    if not container.streams.video:
        container.close()
        raise VideoError(f'{path} has no video stream')
    return container


def _info(path, container) -> VideoInfo:
    stream = container.streams.video[0]
    rate: Optional[Fraction] = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise VideoError(f'{path}: the video stream has no frame rate')
    return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=float(rate),
                     frames=stream.frames or None)


def probe(path: Union[str, Path]) -> VideoInfo:
    """Size, frame rate and (where the container records it) frame count, without decoding."""
    container = _open(path)
    try:
        return _info(path, container)
    finally:
        container.close()


def frames(path: Union[str, Path], start_time: dt.datetime, threads: bool = True) -> Iterator[Frame]:
    """Decode ``path`` frame by frame as RGB.

    ``threads``: let FFmpeg decode on its own threads (frame or slice threading, as the codec allows). Raises
    VideoError for a file that cannot be opened or decoded, or has no frame at all; a video cut short mid-way
    (a truncated recording) ends where its data ends, after the frames before the damage.
    """
    container = _open(path)
    try:
        info = _info(path, container)
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = 'AUTO'
        index = 0
        try:
            for decoded in container.decode(stream):
                yield Frame(index, frame_time(start_time, index, info.fps), decoded.to_ndarray(format='rgb24'))
                index += 1
        except av.FFmpegError as e:
            if index == 0:
                raise VideoError(f'cannot decode video {path}: {e}') from e
            _logger.warning('%s: decoding stopped after %d frames: %s', path, index, e)
        if index == 0:
            raise VideoError(f'{path}: no frame could be decoded')
    finally:
        container.close()


def read_frame(path: Union[str, Path], index: int) -> np.ndarray:
    """Frame ``index`` (0-based, as :func:`frames` numbers them) as (H, W, 3) uint8 RGB: a seek to the key frame
    at or before it, then decoding up to it (never the frames before that key frame). Frames are found by their
    timestamps at the stream's frame rate, so a variable-frame-rate recording may give a neighbouring frame.
    Raises VideoError for a file that cannot be read and an index past the last frame."""
    if index < 0:
        raise VideoError(f'frame {index}: frames are numbered from 0')
    container = _open(path)
    try:
        info = _info(path, container)
        stream = container.streams.video[0]
        base = stream.time_base
        first = stream.start_time or 0
        try:
            container.seek(first + int(round(index / info.fps / base)), stream=stream, backward=True, any_frame=False)
            for decoded in container.decode(stream):
                number = None if decoded.pts is None else int(round((decoded.pts - first) * base * info.fps))
                if number is None or number > index:
                    break  # no timestamps, or a seek past the frame (inexact demuxers): count from the start
                if number == index:
                    return decoded.to_ndarray(format='rgb24')
            else:
                raise VideoError(f'{path} has no frame {index}')
            container.seek(first, stream=stream, backward=True, any_frame=False)
            for number, decoded in enumerate(container.decode(stream)):
                if number == index:
                    return decoded.to_ndarray(format='rgb24')
        except av.FFmpegError as e:
            raise VideoError(f'cannot decode frame {index} of {path}: {e}') from e
        raise VideoError(f'{path} has no frame {index}')
    finally:
        container.close()
