from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from storage.db import Job, JobState

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
    """Ready to search: a model is loaded and its vector engine holds exactly the gallery's vectors, as the
    maintenance loop last checked (``checked_at``, at least every 10 s and after each change it applies); a probe
    reads that state and starts no work."""
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
    health = state.changelog.health
    if health is not None and health.model_id == snap.model_id:
        body['gallery_vectors'], engine['behind'], body['checked_at'] = (health.gallery_vectors, health.behind,
                                                                         health.checked_at)
    if state.engine_error is not None:
        engine['error'] = state.engine_error
        return JSONResponse(status_code=503, content=dict(body, status='vector engine unavailable'))
    if health is None or health.model_id != snap.model_id:
        return JSONResponse(status_code=503, content=dict(body, status='checking the index'))
    if not health.consistent:
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
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
