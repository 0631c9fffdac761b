import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request

from storage.engine import EngineUnavailable, FilterNotSupported, GalleryFilter

from ..deps import SnapshotDep, StateDep, require_read
from ..forms import OffLoopFormRoute, SearchForm, int_list, read_images, str_list, when
from ..schemas import ERRORS, SearchResponse
from ..search_service import search_gallery

def _thumbnail_template(app: FastAPI) -> str:
    """The thumbnail path with an ``{image_id}`` placeholder, looked up once: the lookup walks every route."""
    template = getattr(app.state, 'thumbnail_template', None)
    if template is None:
        template = app.state.thumbnail_template = app.url_path_for('gallery_thumbnail', image_id='{image_id}')
    return template


router = APIRouter(prefix='/v1', route_class=OffLoopFormRoute, tags=['search'], dependencies=[Depends(require_read)],
                   responses=ERRORS)


@router.post('/search', response_model=SearchResponse)
async def search(request: Request, state: StateDep, snap: SnapshotDep, form: Annotated[SearchForm, Form()]):
    """Who is this? Top-k gallery matches per query image, or an explicit no-match below ``min_score``."""
    entered = time.perf_counter()
    stages = {'receive': entered - getattr(request.state, 'amg_start', entered)}  # amg_start: app.main
    settings = state.settings
    k = form.k or settings.default_k
    threshold = snap.min_score if form.min_score is None else form.min_score
    images = form.images
    query_cams = int_list('query_camera_id', form.query_camera_id)
    if form.exclude_same_camera and (query_cams is None or len(query_cams) not in (1, len(images))):
        raise HTTPException(status_code=400,
                            detail='exclude_same_camera needs query_camera_id: one value, or one per image')
    flt = GalleryFilter.of(person_id=form.person_id, camera_ids=int_list('camera_id', form.camera_id),
                           after=when('after', form.after), before=when('before', form.before),
                           tags=str_list(form.tags))
    cams = [(query_cams[0] if len(query_cams) == 1 else query_cams[qi]) if form.exclude_same_camera else None
            for qi in range(len(images))]
    thumbnail = _thumbnail_template(request.app)

    # preprocessed where decoded: a queued search holds model inputs (~100 kB an image), not full-size pixels
    decoded = await read_images(images, settings, state.decode_limiter, prepare=snap.embedder.preprocess,
                                inline=True)
    stages['preprocess'] = sum(d.prepare_seconds for d in decoded)
    stages['decode'] = time.perf_counter() - entered - stages['preprocess']
    try:
        results = await search_gallery(state, snap, decoded, k, threshold, flt, cams, thumbnail, stages)
    except FilterNotSupported as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    except EngineUnavailable as e:
        raise HTTPException(status_code=503, detail=f'the vector engine is unavailable: {e}') from None
    request.state.search_stages, request.state.handler_done = stages, time.perf_counter()  # "answer": app.main
    return SearchResponse(model_id=snap.model_id, min_score=threshold, k=k, results=results)
