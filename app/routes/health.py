from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from storage.db import Job, JobState

from ..deps import StateDep
from ..schemas import TaskPublic
from ..state import NoModel

router = APIRouter(tags=['health'])


@router.get('/healthz')
def healthz() -> dict:
    """The process is up (no model needed)."""
    return {'status': 'ok'}


@router.get('/readyz', responses={503: {'description': 'no model, or the index is being repaired'}})
def readyz(state: StateDep):
    """Ready to search: a model is loaded and the index holds exactly the gallery's vectors."""
    try:
        snap = state.snapshot()
    except NoModel as e:
        return JSONResponse(status_code=503, content={'status': 'no model', 'detail': str(e)})
    consistent = state.changelog.consistent(snap)  # catches up with the change log first
    body = {'status': 'ready', 'model_id': snap.model_id, 'model_name': snap.model_name,
            'gallery_vectors': snap.index.ntotal, 'index_kind': snap.index.kind, 'backend': snap.embedder.backend,
            'activation': TaskPublic.model_validate(state.activator.progress).model_dump(mode='json'),
            'index_build': TaskPublic.model_validate(state.index_builder.progress).model_dump(mode='json')}
    if not consistent:
        return JSONResponse(status_code=503, content=dict(body, status='index inconsistent'))
    return body


@router.get('/metrics', response_class=PlainTextResponse,
            responses={200: {'content': {CONTENT_TYPE_LATEST.split(';')[0]: {}}, 'description': 'Prometheus text'}})
def metrics(state: StateDep) -> Response:
    """Prometheus metrics."""
    with state.Session() as s:
        counts = dict(s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all())
    for job_state in JobState:
        state.metrics.jobs.labels(state=job_state).set(counts.get(job_state, 0))
    if state.ready:
        state.metrics.gallery_size.set(state.snapshot().index.ntotal)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
