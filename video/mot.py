"""MOT Challenge text files: one box per line, ``frame,id,x,y,w,h,conf,...`` (frames 1-based, boxes in pixels,
top-left corner plus size; ``id`` is -1 for detections without a track).

Ground truth adds ``class`` and ``visibility`` columns (MOT17/MOT20 ``gt.txt``); :func:`write_mot` writes whatever
columns it is given, :func:`read_mot` keeps the first six after the frame.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, Iterator, Mapping, Union

import numpy as np

from .errors import VideoError

__all__ = ['read_mot', 'write_mot', 'mot_lines', 'MOT_COLUMNS']

MOT_COLUMNS = ('id', 'x', 'y', 'w', 'h', 'conf')  # the columns of read_mot's arrays, in order


def _lines(source: Union[str, Path, Iterable[str]]) -> tuple[str, Iterable[str]]:
    """(a name for messages, the lines) of a path, of MOT text itself (it has a newline or a comma), or of lines."""
    if isinstance(source, Path) or (isinstance(source, str) and '\n' not in source and ',' not in source):
        path = Path(source)
        try:
            return str(path), path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise VideoError(f'cannot read MOT file {path}: {e}') from e
    if isinstance(source, str):
        return 'MOT text', source.splitlines()
    return 'MOT lines', source


def read_mot(source: Union[str, Path, Iterable[str]]) -> Dict[int, np.ndarray]:
    """Boxes by frame from a MOT Challenge file, its text, or its lines.

    Returns:
        ``{frame: array (N, 6) float64 of (id, x, y, w, h, conf)}`` with frames 1-based as in the file, in
        increasing order. A line with only six values gets conf 1. Blank lines and lines starting with ``#`` are
        skipped.

    Raises:
        VideoError: naming the line, for a line with fewer than six values, a value that is not a number, a frame
            below 1, a width or height that is not positive, or nothing to read at all.
    """
    name, lines = _lines(source)
    rows: Dict[int, list] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        fields = [f.strip() for f in text.replace(';', ',').split(',')]
        while fields and fields[-1] == '':
            fields.pop()
        if len(fields) < 6:
            raise VideoError(f'{name} line {number}: expected frame,id,x,y,w,h[,conf,...], got {text!r}')
        try:
            values = [float(f) for f in fields[:7]]
        except ValueError:
            raise VideoError(f'{name} line {number}: not a number in {text!r}') from None
        if not all(math.isfinite(v) for v in values):
            raise VideoError(f'{name} line {number}: not a finite number in {text!r}')
        frame = values[0]
        if frame != int(frame) or frame < 1:
            raise VideoError(f'{name} line {number}: the frame must be a whole number >= 1 (MOT frames are '
                             f'1-based), got {fields[0]!r}')
        if values[4] <= 0 or values[5] <= 0:
            raise VideoError(f'{name} line {number}: width and height must be positive, got {text!r}')
        rows.setdefault(int(frame), []).append(values[1:7] if len(values) == 7 else values[1:6] + [1.0])
    if not rows:
        raise VideoError(f'{name}: no boxes in it')
    return {frame: np.asarray(rows[frame], dtype=np.float64) for frame in sorted(rows)}


def _number(value: float, decimals: int) -> str:
    text = f'{value:.{decimals}f}'
    return text.rstrip('0').rstrip('.') if '.' in text else text


def mot_lines(frame: int, rows: np.ndarray, decimals: int = 2) -> Iterator[str]:
    """The MOT Challenge lines (each ending in a newline) of one frame's (N, >= 5) ``rows`` of (id, x, y, w, h,
    [conf, ...]); ``frame`` 1-based; ids are written as integers. For writing as boxes come (a video's tracks)."""
    for row in np.asarray(rows):
        rest = ','.join(_number(v, decimals) for v in row[1:])
        yield f'{int(frame)},{int(row[0])},{rest}\n'


def write_mot(path: Union[str, Path], boxes: Mapping[int, np.ndarray], decimals: int = 2) -> None:
    """Write ``{frame (1-based): array (N, >= 5) of (id, x, y, w, h, [conf, ...])}`` as a MOT Challenge file,
    frames in increasing order."""
    with open(path, 'w') as f:
        for frame in sorted(boxes):
            f.writelines(mot_lines(frame, boxes[frame], decimals))
