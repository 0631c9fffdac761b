"""The frame viewer's data: a frame of a video sighting's recording, and every box its ingest tracked in that frame
(app.ingest.tracks_file), each with the sighting its track became. Frames are decoded from the recording on the
server when asked (video.decode.read_frame: a seek to the key frame before, then a few frames); only frames within
the sighting's own track are served, so a key reaches no more of a recording than the sightings it may see."""
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from sqlalchemy import select

from storage import crud
from storage.db import JobKind, Sighting

from .ingest import tracks_file

__all__ = ['NoRecording', 'Recording', 'recording_of']


class NoRecording(LookupError):
    """The sighting has no recording on the server to show (an uploaded crop, a sighting stored before tracks were
    kept, a recording since deleted) or no such frame in its track."""


@lru_cache(maxsize=8)
def _tracked(path: str, mtime_ns: int, size: int) -> Tuple[Dict[int, np.ndarray], Dict[int, Tuple[int, int]]]:
    """({frame (0-based): (N, 6) rows of (track id, x, y, w, h, conf)}, {track id: (first, last) frame}) of a
    tracks file; cached by its path, modification time and size (an ingest run again rewrites it)."""
    from video import VideoError, read_mot
    try:
        by_frame = {frame - 1: rows for frame, rows in read_mot(path).items()}
    except VideoError:  # nothing tracked at all (an empty file)
        return {}, {}
    spans: Dict[int, Tuple[int, int]] = {}
    for frame, rows in by_frame.items():
        for track in rows[:, 0].astype(int).tolist():
            first, last = spans.get(track, (frame, frame))
            spans[track] = (min(first, frame), max(last, frame))
    return by_frame, spans


@dataclass(frozen=True)
class Recording:
    sighting: Sighting
    video_path: str
    tracks_path: Path

    def _tracks(self):
        stat = os.stat(self.tracks_path)
        return _tracked(str(self.tracks_path), stat.st_mtime_ns, stat.st_size)

    def span(self) -> Tuple[int, int]:
        """The sighting's first and last frame (0-based) in its recording."""
        span = self._tracks()[1].get(int(self.sighting.track_id))
        if span is None:
            raise NoRecording(f'sighting {self.sighting.id}: its track is not in the recording\'s tracked boxes')
        return span

    def check_frame(self, frame: int) -> None:
        first, last = self.span()
        if not first <= frame <= last:
            raise NoRecording(f'sighting {self.sighting.id} spans frames {first}-{last} of its recording; '
                              f'frame {frame} is outside it')

    def boxes(self, session, frame: int, sites: Optional[Tuple[str, ...]]) -> List[dict]:
        """Every box tracked in ``frame`` whose track became a sighting ``sites`` sees (None: every site): track
        id, x, y, w, h and that sighting. Tracks too short to keep and erased sightings are left out: an erased
        person's box is not drawn (the recording's pixels are the operator's to delete, docs/privacy.md)."""
        rows = self._tracks()[0].get(frame, np.zeros((0, 6)))
        tracks = sorted({int(t) for t in rows[:, 0]})
        query = select(Sighting.track_id, Sighting.id).where(
            Sighting.ingest_job_id == self.sighting.ingest_job_id, Sighting.track_id.in_(tracks))
        if sites is not None:
            query = query.where(Sighting.site.in_(sites))
        sighting_of = dict(session.execute(query).all()) if tracks else {}
        return [dict(track_id=int(r[0]), x=float(r[1]), y=float(r[2]), w=float(r[3]), h=float(r[4]),
                     sighting_id=sighting_of[int(r[0])]) for r in rows if int(r[0]) in sighting_of]

    def image(self, frame: int) -> np.ndarray:
        from video import VideoError
        from video.decode import read_frame
        try:
            return read_frame(self.video_path, frame)
        except VideoError as e:
            raise NoRecording(f'sighting {self.sighting.id}: frame {frame} cannot be read from its recording '
                              f'({str(e).replace(self.video_path, "the recording")})') from None


def recording_of(session, data_dir: Path, sighting: Sighting) -> Recording:
    """Where ``sighting``'s recording and tracked boxes are; raises :class:`NoRecording`."""
    if sighting.ingest_job_id is None or sighting.track_id is None:
        raise NoRecording(f'sighting {sighting.id} has no recording on the server (an uploaded crop, or a video '
                          'sighting stored before the service kept its tracked boxes)')
    job = crud.get_job(session=session, job_id=sighting.ingest_job_id)
    video = None if job is None or job.kind != JobKind.INGEST else (job.params or {}).get('video_path')
    tracks = tracks_file(data_dir, sighting.ingest_job_id)
    if not video or not Path(video).is_file() or not tracks.is_file():
        raise NoRecording(f'sighting {sighting.id}: its recording is no longer on the server')
    return Recording(sighting, str(video), tracks)
