"""Video ingest: a camera's recording in as a background job (app.ingest), uploaded (``POST /v1/videos``, within
AMG_MAX_VIDEO_BYTES) or named on the server (``POST /v1/admin/videos``: long recordings under AMG_DATA_ROOTS). The
job is answered at once; its progress, cancel and outcome are the jobs routes' (``/v1/admin/jobs/{id}``)."""
import hashlib
import os
import shutil
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from storage import crud
from storage.db import JobKind

from ..deps import MAX_ID, StateDep, require_api_key, require_write
from ..forms import bad, when
from ..ingest import IngestParams, ingest_of
from ..schemas import ERRORS, JobPublic
from .admin import confined, job_public

router = APIRouter(tags=['videos'], responses=ERRORS)

CHUNK = 1024 * 1024


def _check_video(path: str, boxes: Optional[str], shown: str = '') -> None:
    """Refuse, before a job is queued, a file FFmpeg cannot open or MOT data that does not parse (nothing kept).
    ``shown``: the name the user knows the video by (an upload's, not where the server keeps it)."""
    from video import VideoError, read_mot
    from video.decode import probe
    for field, check, value in (('video', probe, path), ('boxes', read_mot, boxes)):
        if value is not None:
            try:
                check(value)
            except VideoError as e:
                raise bad(field, str(e).replace(str(value), shown or str(value))) from None


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _submit(request: Request, state, params: IngestParams) -> JSONResponse:
    """The ingest job of ``params``: an earlier one of the same file and camera (200), or a new one (202)."""
    with state.Session() as s:
        earlier = ingest_of(s, params.video_sha256, params.camera_id)
        if earlier is not None:
            return JSONResponse(status_code=200, content=job_public(earlier).model_dump(mode='json'))
    job_id = request.app.state.jobs.submit(JobKind.INGEST, params.model_dump(mode='json'))
    with state.Session() as s:
        return JSONResponse(status_code=202, content=job_public(crud.get_job(session=s, job_id=job_id))
                            .model_dump(mode='json'))


def _params(**values) -> IngestParams:
    try:
        return IngestParams(**values)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        raise bad(str(first['loc'][0]), first['msg']) from None


@router.post('/v1/videos', response_model=JobPublic, status_code=202, dependencies=[Depends(require_write)],
             responses={200: {'model': JobPublic, 'description': 'this file was ingested on this camera already '
                                                                 '(or is being): that job'}})
async def upload_video(request: Request, state: StateDep,
                       video: UploadFile = File(..., description='the recording (any container and codec FFmpeg '
                                                                 'decodes)'),
                       camera_id: int = Form(..., ge=0, le=MAX_ID, description='the camera that recorded it'),
                       start_time: str = Form(..., description="its first frame's time, ISO 8601 (no zone: UTC)"),
                       boxes: Optional[UploadFile] = File(None, description="your detector's boxes, a MOT "
                                                                            "Challenge file; none: the built-in "
                                                                            "detector (static cameras)"),
                       max_crops: int = Form(8, ge=1, description='crops kept per track')):
    """Ingest an uploaded recording as a background job: its tracks become sightings of unknown persons. Answers
    the job (``/v1/admin/jobs/{id}`` for progress and cancel); the same file on the same camera is ingested once.
    An unreadable file or bad MOT data is refused here, and nothing is kept."""
    start = when('start_time', start_time)
    folder = state.data_dir / 'videos'
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f'.upload-{os.getpid()}-{id(video)}'

    def save() -> tuple:
        digest = hashlib.sha256()
        with open(tmp, 'wb') as out:  # streamed: never the whole file in memory
            while block := video.file.read(CHUNK):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        suffix = Path(video.filename or '').suffix.lower()[:8] if Path(video.filename or '').suffix.isascii() else ''
        path = folder / f'{sha}{suffix}'
        os.replace(tmp, path)
        mot = None
        if boxes is not None:
            mot = folder / f'{sha}-camera{camera_id}.mot.txt'
            with open(mot, 'wb') as out:
                shutil.copyfileobj(boxes.file, out)
        return str(path), None if mot is None else str(mot), sha

    try:
        path, mot, sha = await run_in_threadpool(save)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        await run_in_threadpool(_check_video, path, mot, video.filename or 'the upload')
    except Exception:
        with state.Session() as s:
            keep = ingest_of(s, sha, camera_id) is not None  # another ingest of these bytes uses the file
        if not keep:
            Path(path).unlink(missing_ok=True)
        if mot is not None:
            Path(mot).unlink(missing_ok=True)
        raise
    params = _params(video_path=path, camera_id=camera_id, start_time=start, boxes_path=mot, max_crops=max_crops,
                     video_sha256=sha)
    return _submit(request, state, params)


@router.post('/v1/admin/videos', response_model=JobPublic, status_code=202, tags=['admin'],
             dependencies=[Depends(require_api_key)],
             responses={200: {'model': JobPublic, 'description': 'this file was ingested on this camera already '
                                                                 '(or is being): that job'}})
async def ingest_video(request: Request, state: StateDep, body: IngestParams):
    """Ingest a recording on the server (a path under AMG_DATA_ROOTS: long recordings) as a background job; as
    ``POST /v1/videos`` otherwise."""
    path = confined(state, 'video_path', body.video_path, file=True)
    boxes = None if body.boxes_path is None else confined(state, 'boxes_path', body.boxes_path, file=True)
    await run_in_threadpool(_check_video, path, boxes)
    sha = await run_in_threadpool(_file_sha256, path)
    params = body.model_copy(update=dict(video_path=path, boxes_path=boxes, video_sha256=sha))
    return _submit(request, state, params)
