from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from storage.db import Job, JobState
from storage.engine import EngineUnavailable

from ..deps import StateDep
from ..schemas import TaskPublic
from ..snapshot import NoModel

router = APIRouter(tags=['health'])


@router.get('/healthz')
def healthz() -> dict:
    """The process is up (no model needed)."""
    return {'status': 'ok'}


@router.get('/readyz', responses={503: {'description': 'no model, the index is being repaired, or the vector engine '
                                                     'is unavailable'}})
def readyz(state: StateDep):
    """Ready to search: a model is loaded and its vector engine holds exactly the gallery's vectors."""
    try:
        snap = state.snapshot()
    except NoModel as e:
        return JSONResponse(status_code=503, content={'status': 'no model', 'detail': str(e)})
    engine = {'name': snap.engine.name, 'kind': snap.engine.kind}
    body = {'status': 'ready', 'model_id': snap.model_id, 'model_name': snap.model_name,
            'index_kind': snap.engine.kind, 'backend': snap.embedder.backend,
            'precision': snap.embedder.precision, 'vector_engine': engine,
            'activation': TaskPublic.model_validate(state.activator.progress).model_dump(mode='json'),
            'index_build': TaskPublic.model_validate(state.index_builder.progress).model_dump(mode='json')}
    try:
        consistent, body['gallery_vectors'] = state.changelog.consistent(snap)  # catches up with the log first
        engine['behind'] = state.changelog.behind(snap)
    except EngineUnavailable as e:
        engine['behind'], engine['error'] = state.changelog.behind(snap), str(e)
        return JSONResponse(status_code=503, content=dict(body, status='vector engine unavailable'))
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
        try:
            state.metrics.gallery_size.set(state.snapshot().engine.count())
        except EngineUnavailable:  # the last known size stays
            pass
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
