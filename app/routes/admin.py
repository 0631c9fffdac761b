from pathlib import Path
from typing import List, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import ValidationError

from reid.datasets import DatasetError, load_dataset
from storage import crud
from storage.db import JobKind, JobState
from storage.index import IndexKind

from ..deps import MAX_ID, IdPath, SessionDep, StateDep, require_api_key, require_deployment_admin
from ..snapshot import NoModel
from ..jobs import job_config
from ..schemas import (ERRORS, JobCreate, JobPublic, JobsPublic, Message, ModelPublic, ModelsPublic,
                       TaskPublic)

router = APIRouter(prefix='/v1/admin', tags=['admin'], dependencies=[Depends(require_api_key),
                                                                     Depends(require_deployment_admin)],
                   responses=ERRORS)


def confined(state, field: str, value: str, file: bool = False) -> str:
    """A server path a job may read: under one of AMG_DATA_ROOTS (links resolved). Missing and refused paths get
    the same answer, so the API cannot probe what exists elsewhere."""
    try:
        path = Path(value).expanduser().resolve()
    except (ValueError, RuntimeError):  # an embedded NUL; a link loop
        path = None
    inside = path is not None and any(path == root or root in path.parents for root in state.settings.data_root_list)
    if not inside or not (path.is_file() if file else path.is_dir()):
        raise HTTPException(status_code=400, detail=f'{field}: no such {"file" if file else "folder"} under the '
                                                    f'allowed data roots (AMG_DATA_ROOTS)')
    return str(path)


def _dataset(state, field: str, value: str) -> str:
    """A labelled dataset under the data roots, readable."""
    path = confined(state, field, value)
    try:
        load_dataset(Path(path))
    except DatasetError as e:
        raise HTTPException(status_code=400, detail=f'{field}: {e}') from None
    return path


def _check_adapt_sources(state, values: dict) -> None:
    """An adapt job's crops (a folder under the data roots, or the gallery's: some must match) and check set."""
    if values.get('check_dir') is not None:
        values['check_dir'] = _dataset(state, 'check_dir', values['check_dir'])
    if values.get('data_dir') is not None:
        values['data_dir'] = confined(state, 'data_dir', values['data_dir'])
        return
    if values.get('folder_tracks'):
        raise HTTPException(status_code=400, detail='folder_tracks: only with data_dir (a folder of crops)')
    from reid.config import AdaptConfig

    from ..adaptation import count_gallery_crops
    try:
        selection = AdaptConfig(weight_path='', **{k: v for k, v in values.items() if k != 'weight_path'})
    except ValidationError:
        return  # the full check below answers 422
    with state.Session() as s:
        if not count_gallery_crops(s, selection):
            raise HTTPException(status_code=400, detail='the gallery has no crops for these options (cameras, '
                                                        'since, until): nothing to adapt to')


def job_public(job) -> JobPublic:
    out = JobPublic.model_validate(job)
    out.log_tail = '\n'.join((job.log or '').splitlines()[-20:])
    return out


@router.get('/data-roots', response_model=List[str])
def data_roots(state: StateDep) -> List[str]:
    """The folders jobs may read datasets and weights from (AMG_DATA_ROOTS); the page suggests the first."""
    return [str(root) for root in state.settings.data_root_list]


@router.post('/jobs', response_model=JobPublic, status_code=202)
def start_job(body: JobCreate, state: StateDep, request: Request):
    """Start a train / prune / fine-tune / adapt job in a worker process (same options as the CLI)."""
    kind = JobKind(body.kind)
    values = body.params.model_dump(mode='json')  # validated per kind by the body's own model
    if kind == JobKind.ADAPT:
        _check_adapt_sources(state, values)
    else:
        values['data_dir'] = _dataset(state, 'data_dir', values['data_dir'])
    if kind != JobKind.TRAIN and values.get('weight_path') is None:
        with state.Session() as s:
            active = crud.active_model(session=s)
        if active is None:
            raise HTTPException(status_code=409, detail='no active model to start from: give weight_path')
        values['weight_path'] = active.path
    elif values.get('weight_path') is not None:
        values['weight_path'] = confined(state, 'weight_path', values['weight_path'], file=True)
    if values.get('teacher_path') is not None:
        values['teacher_path'] = confined(state, 'teacher_path', values['teacher_path'], file=True)
    try:
        job_config(kind, values, 'runs', 0)  # what the worker will build: its cross-field checks run now
    except ValidationError as e:
        raise HTTPException(status_code=422, detail=e.errors(include_url=False, include_context=False, include_input=False)) from None
    job_id = request.app.state.jobs.submit(kind, values)
    with state.Session() as s:
        return job_public(crud.get_job(session=s, job_id=job_id))


@router.get('/jobs', response_model=JobsPublic)
def list_jobs(session: SessionDep, offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(50, ge=1, le=500)):
    """Jobs, newest first."""
    jobs, total = crud.list_jobs(session=session, offset=offset, limit=limit)
    return JobsPublic(data=[job_public(j) for j in jobs], count=total)


@router.get('/jobs/{job_id}', response_model=JobPublic)
def get_job(job_id: IdPath, session: SessionDep):
    """State, progress, current epoch/round, latest metrics and the log tail of a job."""
    job = crud.get_job(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f'job {job_id} not found')
    return job_public(job)


@router.post('/jobs/{job_id}/cancel', response_model=Message, status_code=202)
def cancel_job(job_id: IdPath, request: Request):
    """Ask a job to stop."""
    previous = request.app.state.jobs.cancel(job_id)
    if previous is None:
        raise HTTPException(status_code=404, detail=f'job {job_id} not found')
    if previous not in (JobState.QUEUED, JobState.RUNNING):
        raise HTTPException(status_code=409, detail=f'job {job_id} is {previous}: nothing to cancel')
    return Message(detail=f'job {job_id}: cancel requested')


@router.get('/models', response_model=ModelsPublic)
def list_models(state: StateDep, session: SessionDep):
    """Registered models; the active one serves queries."""
    models = crud.list_models(session=session)
    return ModelsPublic(data=[ModelPublic.model_validate(m) for m in models], count=len(models),
                        activation=TaskPublic.model_validate(state.activator.progress))


@router.post('/models/{model_id}/activate', response_model=Message, status_code=202)
def activate_model(model_id: IdPath, state: StateDep):
    """Switch to a model: the gallery is re-embedded in the background, then the swap is atomic."""
    try:
        state.activator.activate(model_id)
    except KeyError:
        raise HTTPException(status_code=404, detail=f'model {model_id} not found') from None
    except RuntimeError as e:
        raise HTTPException(status_code=409, detail=str(e)) from None
    return Message(detail=f'activating model {model_id}: follow GET /v1/admin/models (activation)')


@router.post('/index/rebuild', response_model=Message, status_code=202)
def rebuild_index(state: StateDep, kind: Optional[IndexKind] = Query(
        None, description='index kind (default: AMG_INDEX_KIND for the gallery size)')):
    """Rebuild the active model's FAISS index in the background from the vectors in the database (e.g. switch a
    grown gallery to ``compressed``); searches use the old index until the new one is complete."""
    try:
        snap = state.snapshot()
        try:
            snap.engine.check_kind(kind)
        except ValueError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None
        state.index_builder.rebuild(snap, kind)
    except NoModel as e:
        raise HTTPException(status_code=503, detail=str(e)) from None
    except RuntimeError as e:
        raise HTTPException(status_code=409, detail=str(e)) from None
    return Message(detail='rebuilding the index: follow GET /readyz (index_build)')
