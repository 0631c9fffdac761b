"""Video ingest: a camera's recording in as a background job (app.ingest), uploaded (``POST /v1/videos``, within
AMG_MAX_VIDEO_BYTES) or named on the server (``POST /v1/admin/videos``: long recordings under AMG_DATA_ROOTS). The
job is answered at once; its progress, cancel and outcome are the jobs routes' (``/v1/admin/jobs/{id}``)."""
import hashlib
import os
import uuid
from pathlib import Path
from typing import Optional, Tuple

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from storage import crud
from storage.db import JobKind

from ..deps import (MAX_ID, IdPath, PrincipalDep, StateDep, require_api_key, require_deployment_admin, require_write,
                    site_for_write)
from ..forms import bad, when
from ..ingest import IngestParams, ingest_of, uses_file
from ..schemas import ERRORS, JobPublic
from .admin import confined, job_public

router = APIRouter(tags=['videos'], responses=ERRORS)

CHUNK = 1024 * 1024


def _check_video(path: str, boxes: Optional[str], shown: str = '', shown_boxes: str = '') -> None:
    """Refuse, before a job is queued, a file FFmpeg cannot open or MOT data that does not parse (nothing kept).
    ``shown``, ``shown_boxes``: the names the user knows the files by (an upload's, not where the server keeps
    them)."""
    from video import VideoError, read_mot
    from video.decode import probe
    for field, check, value, name in (('video', probe, path, shown), ('boxes', read_mot, boxes, shown_boxes)):
        if value is not None:
            try:
                check(value)
            except VideoError as e:
                raise bad(field, str(e).replace(str(value), name or str(value))) from None


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def ingest_public(job) -> JobPublic:
    """An uploaded video's ingest job as its uploader may see it: its options without the server's paths, no log."""
    out = job_public(job)
    given = job.params or {}
    out.params = {k: given.get(k) for k in ('camera_id', 'start_time', 'max_crops', 'video_name', 'site')}
    out.log_tail = ''
    if out.error:
        for field in ('video_path', 'boxes_path'):
            if given.get(field):
                out.error = out.error.replace(given[field], given.get('video_name') or 'the upload')
    return out


def _submit(request: Request, state, params: IngestParams) -> JSONResponse:
    """The ingest job of ``params``: an earlier one it repeats (200), or a new one (202)."""
    view = ingest_public if params.uploaded else job_public
    with state.Session() as s:
        earlier = ingest_of(s, params)
        if earlier is not None:
            return JSONResponse(status_code=200, content=view(earlier).model_dump(mode='json'))
    job_id = request.app.state.jobs.submit(JobKind.INGEST, params.model_dump(mode='json'))
    with state.Session() as s:
        return JSONResponse(status_code=202, content=view(crud.get_job(session=s, job_id=job_id))
                            .model_dump(mode='json'))


def _params(**values) -> IngestParams:
    try:
        return IngestParams(**values)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        raise bad(str(first['loc'][0]), first['msg']) from None


def _save(source, folder: Path, name_of) -> Tuple[Path, str]:
    """``source`` (a file object) streamed to ``folder`` (never whole in memory), fsynced, named by
    ``name_of(sha256)``; (its path, its sha256)."""
    tmp = folder / f'.upload-{uuid.uuid4().hex}'
    try:
        digest = hashlib.sha256()
        with open(tmp, 'wb') as out:
            while block := source.read(CHUNK):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        path = folder / name_of(sha)
        os.replace(tmp, path)  # the same bytes again: the same name, the same content
        return path, sha
    finally:
        tmp.unlink(missing_ok=True)


@router.post('/v1/videos', response_model=JobPublic, status_code=202, dependencies=[Depends(require_write)],
             responses={200: {'model': JobPublic, 'description': 'this upload was ingested so already (or is '
                                                                 'being): that job'}})
async def upload_video(request: Request, state: StateDep, principal: PrincipalDep,
                       video: UploadFile = File(..., description='the recording (any container and codec FFmpeg '
                                                                 'decodes)'),
                       camera_id: int = Form(..., ge=0, le=MAX_ID, description='the camera that recorded it'),
                       start_time: str = Form(..., description="its first frame's time, ISO 8601 (no zone: UTC)"),
                       boxes: Optional[UploadFile] = File(None, description="your detector's boxes, a MOT "
                                                                            "Challenge file; none: the built-in "
                                                                            "detector (static cameras)"),
                       max_crops: int = Form(8, ge=1, description='crops kept per track'),
                       site: Optional[str] = Form(None, description="the camera's site (AMG_SITES); default: the "
                                                                    "key's only site")):
    """Ingest an uploaded recording as a background job: its tracks become sightings of unknown persons. Answers
    the job (``GET /v1/videos/{id}`` follows it); the same upload again (file, camera, boxes, start time, crops)
    answers the first one. An unreadable file or bad MOT data is refused here, and nothing is kept."""
    start = when('start_time', start_time)
    if start is None:
        raise bad('start_time', 'required')
    site = site_for_write(state, principal, site)
    name = Path(video.filename or 'upload').name[:200]
    _params(video_path='-', camera_id=camera_id, start_time=start, max_crops=max_crops)  # a 400 before any write
    folder = state.data_dir / 'videos'
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(name).suffix.lower()[:8] if Path(name).suffix.isascii() else ''
    saved: list = []

    def save() -> tuple:
        path, sha = _save(video.file, folder, lambda sha: f'{sha}{suffix}')
        saved.append(path)
        mot, mot_sha = None, ''
        if boxes is not None:
            mot, mot_sha = _save(boxes.file, folder, lambda b: f'{b}.mot.txt')
            saved.append(mot)
        return str(path), None if mot is None else str(mot), sha, mot_sha

    try:
        path, mot, sha, mot_sha = await run_in_threadpool(save)
        await run_in_threadpool(_check_video, path, mot, name, Path(boxes.filename or 'boxes').name if boxes else '')
    except BaseException:
        def forget() -> None:  # unless an ingest job uses the same bytes
            with state.Session() as s:
                for each in saved:
                    if not uses_file(s, str(each)):
                        Path(each).unlink(missing_ok=True)
        await run_in_threadpool(forget)
        raise
    params = _params(video_path=path, camera_id=camera_id, start_time=start, boxes_path=mot, max_crops=max_crops,
                     video_sha256=sha, boxes_sha256=mot_sha, video_name=name, uploaded=True, site=site)
    return _submit(request, state, params)


@router.get('/v1/videos/{job_id}', response_model=JobPublic, dependencies=[Depends(require_write)])
def get_video_job(job_id: IdPath, state: StateDep, principal: PrincipalDep):
    """An uploaded video's ingest job: its progress, and when done how many sightings and crops it stored."""
    with state.Session() as s:
        job = crud.get_job(session=s, job_id=job_id)
        if (job is None or job.kind != JobKind.INGEST or not (job.params or {}).get('uploaded') or
                not principal.sees((job.params or {}).get('site') or '')):
            raise HTTPException(status_code=404, detail=f'video ingest {job_id} not found')
        return ingest_public(job)


@router.post('/v1/admin/videos', response_model=JobPublic, status_code=202, tags=['admin'],
             dependencies=[Depends(require_api_key), Depends(require_deployment_admin)],
             responses={200: {'model': JobPublic, 'description': 'this ingest was asked for already (or is being): '
                                                                 'that job'}})
async def ingest_video(request: Request, state: StateDep, body: IngestParams, principal: PrincipalDep):
    """Ingest a recording on the server (a path under AMG_DATA_ROOTS: long recordings) as a background job; as
    ``POST /v1/videos`` otherwise."""
    site = site_for_write(state, principal, body.site)
    path = confined(state, 'video_path', body.video_path, file=True)
    boxes = None if body.boxes_path is None else confined(state, 'boxes_path', body.boxes_path, file=True)
    await run_in_threadpool(_check_video, path, boxes)
    sha = await run_in_threadpool(_file_sha256, path)
    boxes_sha = '' if boxes is None else await run_in_threadpool(_file_sha256, boxes)
    params = body.model_copy(update=dict(video_path=path, boxes_path=boxes, video_sha256=sha, boxes_sha256=boxes_sha,
                                         video_name=body.video_name or Path(path).name, uploaded=False,
                                         site=site))
    return _submit(request, state, params)
