"""Video ingest jobs: one camera's recording in, its tracks out as sightings. The ``video`` package decodes,
detects and tracks (video.sightings_from_video); this module stores what it yields.

An ingest runs in a job's worker process at idle priority (app.jobs), so a camera's recording never takes the cores
from searches. Each sighting is written in one transaction, its crops as gallery images without vectors: the
service embeds them on its model thread when it follows the change log, as it does another replica's uploads. A
cancelled or failed ingest keeps the sightings it finished and no half of one, and a run again over the same file
stores only the tracks it had not. The same file (by its sha256) on the same camera is ingested once. With an
active model that has the visibility head, the job lends it to the choice of each track's crops (the share of the
person each shows: :func:`active_visible_share`)."""
import datetime as dt
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from reid.progress import Cancelled, Progress
from storage import crud
from storage.db import JobKind, JobState, Sighting
from storage.images import ImageStore

from .deps import MAX_ID
from .gallery_writes import write_images
from .sightings import MAX_SIGHTING_CROPS, sighting_rows

__all__ = ['IngestParams', 'run_ingest', 'ingest_of', 'uses_file', 'tracks_file', 'SAME_INGEST',
           'active_visible_share']

_logger = logging.getLogger(__name__)


class IngestParams(BaseModel):
    """A video ingest job's options (``POST /v1/videos``, ``POST /v1/admin/videos``)."""
    model_config = ConfigDict(extra='forbid')

    video_path: str = Field(description='the recording, a server path under AMG_DATA_ROOTS (any container and '
                                        'codec FFmpeg decodes)')
    camera_id: int = Field(ge=0, le=MAX_ID, description="the camera that recorded it (the gallery's camera_id)")
    start_time: dt.datetime = Field(description="when its first frame was taken (ISO 8601; without a zone: UTC)")
    boxes_path: Optional[str] = Field(None, description="the user's own detector's boxes, a MOT Challenge file "
                                                        "(frame,id,x,y,w,h,conf,...); none: the built-in "
                                                        "background-subtraction detector (static cameras)")
    max_crops: int = Field(8, ge=1, le=MAX_SIGHTING_CROPS, description='crops kept per track, the best by quality')
    site: Optional[str] = Field(None, max_length=64, description="the site (AMG_SITES) of the camera; default: the "
                                                                "key's only site")
    # set by the service
    video_sha256: str = Field('', description="the file's sha256: the same ingest again is answered by the first")
    boxes_sha256: str = Field('', description="the boxes file's sha256 ('' without one)")
    video_name: str = Field('', description="the name its sightings carry (an upload's file name; else the file's)")
    uploaded: bool = Field(False, description='an upload (POST /v1/videos), not a server path')


# what makes two ingests the same: the bytes, the camera, the boxes, the clock and the crops kept
SAME_INGEST = ('video_sha256', 'camera_id', 'boxes_sha256', 'start_time', 'max_crops', 'uploaded', 'site')


def ingest_of(session, params: 'IngestParams'):
    """The ingest job, queued, running or succeeded, that ``params`` repeats (None: none). Uploads are matched with
    uploads only: a writer never learns of an admin's recordings."""
    wanted = params.model_dump(mode='json', include=set(SAME_INGEST))
    for job in crud.list_jobs_of_kind(session=session, kind=JobKind.INGEST):
        given = job.params or {}
        if (all(given.get(k) == v for k, v in wanted.items()) and
                job.state in (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING, JobState.SUCCEEDED)):
            return job
    return None


def tracks_file(data_dir: Path, job_id: int) -> Path:
    """Where an ingest job writes every box it tracked (MOT Challenge format, 1-based frames, the tracker's ids):
    what the frame viewer draws over a frame of its recording."""
    return Path(data_dir) / 'videos' / 'tracks' / f'{int(job_id)}.mot.txt'


def uses_file(session, path: str) -> bool:
    """Whether an ingest job (any state) names ``path`` as its video or boxes: the file stays."""
    return any(path in ((job.params or {}).get('video_path'), (job.params or {}).get('boxes_path'))
               for job in crud.list_jobs_of_kind(session=session, kind=JobKind.INGEST))


def _stored(session, columns: Dict) -> bool:
    """Whether this track of this recording is a sighting already (tracking is deterministic: a run again over the
    same file and boxes finds the same tracks). Such a sighting now names this run's job: its tracks file is the
    one that goes on to the recording's end (the frame viewer reads it)."""
    found = session.scalars(select(Sighting).where(
        Sighting.video == columns['video'], Sighting.camera_id == columns['camera_id'],
        Sighting.track_id == columns['track_id'], Sighting.first_time == columns['first_time'],
        Sighting.site == columns.get('site', ''))).all()
    for row in found:
        if columns.get('ingest_job_id') is not None:
            row.ingest_job_id = columns['ingest_job_id']
    return bool(found)


def _drawable(rows) -> 'np.ndarray':
    """Boxes as the tracks file keeps them (2 decimals): a width or height that would round to 0 is kept at 0.01,
    since a MOT file with an empty box is refused when the frame viewer reads it."""
    import numpy as np
    rows = np.array(rows, dtype=np.float64, copy=True)
    if len(rows):
        rows[:, 3:5] = np.maximum(rows[:, 3:5], 0.01)
    return rows


def active_visible_share(Session: Callable) -> Optional[Callable[[List], 'np.ndarray']]:
    """The active model's visibility head as the visible share of each crop (its per-part visibilities averaged),
    for the choice of a track's crops (video.sightings_from_video). None without an active model, for one without
    the head, or when its file cannot be opened (logged): crops are then chosen by the frame's measures alone, as
    they are for a track whose batch the model fails on (logged; the ingest goes on). It runs in the ingest job's
    worker (idle priority), as AMG_BACKEND (from the environment) serves the model; only the choice depends on it,
    the vectors are the service's."""
    from .settings import Settings
    from .snapshot import open_embedder
    with Session() as s:
        model = crud.active_model(session=s)
        if model is None:
            return None
        path, sha256 = model.path, model.sha256
    try:
        settings = Settings()
    except ValueError as e:  # pydantic's ValidationError, pydantic-settings' SettingsError (bad JSON)
        _logger.warning('crops chosen without the visibility head: the AMG_* settings do not validate (%s)', e)
        return None
    try:
        embedder = open_embedder(path, settings, sha256 or None)
    except (OSError, ValueError, RuntimeError) as e:
        _logger.warning('crops chosen without the visibility head: the active model %s cannot be opened (%s)', path, e)
        return None
    if not embedder.has_visibility:
        return None

    def visible_share(crops: List) -> 'np.ndarray':
        import numpy as np
        try:
            return embedder.embed_with_visibility(crops)[1].mean(1)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's errors are plain Exceptions; one track's batch only
            _logger.warning('%d crops chosen without the visibility head: %s', len(crops), e)
            return np.ones(len(crops))
    return visible_share


def run_ingest(params: IngestParams, Session: Callable, database, images: ImageStore,
               on_progress: Callable[[Progress], bool], job_id: Optional[int] = None,
               tracks_path: Optional[Path] = None,
               visible_share: Optional[Callable[[List], 'np.ndarray']] = None) -> Dict[str, Any]:
    """Decode, detect, track and store every track of ``params.video_path`` as a sighting (naming ``job_id``);
    what it did. Every tracked box goes to ``tracks_path`` as it comes (MOT format; a run again writes it anew).
    ``visible_share``: crops -> the share of the person each shows (:func:`active_visible_share`), for the choice
    of each track's crops. Raises video.VideoError (an unreadable file, bad MOT data) and reid.progress.Cancelled
    when ``on_progress`` asks."""
    from video import read_mot, sightings_from_video
    from video.mot import mot_lines
    boxes = read_mot(params.boxes_path) if params.boxes_path else None  # bad lines fail before any frame
    start = params.start_time
    if start.tzinfo is not None:
        start = start.astimezone(dt.timezone.utc).replace(tzinfo=None)
    done = dict(frames=0, total=None, sightings=0, crops=0)
    stop = False

    def progress(frames: int, total: Optional[int]) -> None:
        nonlocal stop
        done.update(frames=frames, total=total)
        share = min(frames / total, 0.99) if total else 0.0
        stop = bool(on_progress(Progress('ingest', share, info=dict(frames=frames, sightings=done['sightings']))))

    video = params.video_name or Path(params.video_path).name
    tracked = None
    if tracks_path is not None:
        tracks_path.parent.mkdir(parents=True, exist_ok=True)
        tracked = open(tracks_path, 'w')
    try:
        on_tracks = None if tracked is None else (
            lambda frame, rows: tracked.writelines(mot_lines(frame + 1, _drawable(rows))))
        for sighting in sightings_from_video(params.video_path, str(params.camera_id), start, boxes,
                                             max_crops=params.max_crops, progress=progress, cancelled=lambda: stop,
                                             on_tracks=on_tracks, visible_share=visible_share):
            items, metas, columns = sighting_rows(sighting, params.site or '')
            columns.update(video=video, ingest_job_id=job_id)
            if tracked is not None:  # a sighting is shown over frames only after they are on disk
                tracked.flush()
            with Session.begin() as s:  # stored by an earlier run that was interrupted: the same tracks again
                if _stored(s, columns):
                    continue
            write_images(Session, database, images, items, metas, sighting=columns)
            done['sightings'] += 1
            done['crops'] += len(items)
    finally:
        if tracked is not None:
            tracked.close()
    if stop:
        raise Cancelled()
    _logger.info('ingested %s: %d sightings, %d crops from %d frames', params.video_path, done['sightings'],
                 done['crops'], done['frames'])
    return dict(sightings=done['sightings'], crops=done['crops'], frames=done['frames'],
                chosen_by_visibility=visible_share is not None)
