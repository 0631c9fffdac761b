import time
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request

from storage.engine import EngineUnavailable, FilterNotSupported, GalleryFilter

from .. import audit
from ..audit import MAX_FILTER_CHARS
from ..deps import IdPath, ScopeDep, SnapshotDep, StateDep, require_read
from ..forms import OffLoopFormRoute, SearchForm, int_list, read_images, str_list, when
from ..schemas import ERRORS, SearchResponse
from ..search_service import PersonNotFound, search_gallery, search_person
from ..sightings import GROUP_OVERFETCH, group_by_sighting

def _thumbnail_template(app: FastAPI) -> str:
    """The thumbnail path with an ``{image_id}`` placeholder, looked up once: the lookup walks every route."""
    template = getattr(app.state, 'thumbnail_template', None)
    if template is None:
        template = app.state.thumbnail_template = app.url_path_for('gallery_thumbnail', image_id='{image_id}')
    return template


@contextmanager
def _engine_errors() -> Iterator[None]:
    """A filter the engine cannot express is a 422; the engine down, a 503."""
    try:
        yield
    except FilterNotSupported as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    except EngineUnavailable as e:
        raise HTTPException(status_code=503, detail=f'the vector engine is unavailable: {e}') from None


def _form_filters(form: SearchForm, queries: int) -> dict:
    """The audit trail's record of a search form: the filters given and how many query images (never the images)."""
    given = {name: getattr(form, name) for name in ('person_id', 'camera_id', 'after', 'before', 'tags', 'group',
                                                    'group_by', 'exclude_same_camera', 'query_camera_id', 'min_score')}
    return dict({name: str(value)[:MAX_FILTER_CHARS] for name, value in given.items() if value not in (None, False, '')},
                queries=str(queries))


router = APIRouter(prefix='/v1', route_class=OffLoopFormRoute, tags=['search'], dependencies=[Depends(require_read)],
                   responses=ERRORS)


@router.post('/search', response_model=SearchResponse)
async def search(request: Request, state: StateDep, snap: SnapshotDep, form: Annotated[SearchForm, Form()],
                 scope: ScopeDep):
    """Who is this? Top-k gallery matches per query image, or an explicit no-match below ``min_score``; with
    ``group``, all images are one person's crops and get one answer. ``group_by=sighting``: one match per sighting
    (its best-matching crop, with camera and time range): found by asking the engine for 8k crops, on FAISS and on
    Milvus alike (Milvus 2.3.5, the server this service runs on, has no grouping search), so sightings with many
    crops near the top can leave fewer than k."""
    entered = time.perf_counter()
    stages = {'receive': entered - getattr(request.state, 'amg_start', entered)}  # amg_start: app.main
    settings = state.settings
    k = form.k or settings.default_k
    scoring = snap.scoring(form.visibility)
    threshold = scoring.min_score if form.min_score is None else form.min_score
    images = form.images
    query_cams = int_list('query_camera_id', form.query_camera_id)
    if form.exclude_same_camera and (query_cams is None or len(query_cams) not in (1, len(images))):
        raise HTTPException(status_code=400,
                            detail='exclude_same_camera needs query_camera_id: one value, or one per image')
    if form.group and form.exclude_same_camera and len(set(query_cams)) != 1:
        raise HTTPException(status_code=400, detail='exclude_same_camera with group needs one query_camera_id')
    flt = GalleryFilter.of(person_id=form.person_id, camera_ids=int_list('camera_id', form.camera_id),
                           after=when('after', form.after), before=when('before', form.before),
                           tags=str_list(form.tags)).within(scope)
    cams = [(query_cams[0] if len(query_cams) == 1 else query_cams[qi]) if form.exclude_same_camera else None
            for qi in range(1 if form.group else len(images))]
    thumbnail = _thumbnail_template(request.app)

    # preprocessed where decoded: a queued search holds model inputs (~100 kB an image), not full-size pixels
    decoded = await read_images(images, settings, state.decode_limiter, prepare=snap.embedder.preprocess,
                                inline=True)
    stages['preprocess'] = sum(d.prepare_seconds for d in decoded)
    stages['decode'] = time.perf_counter() - entered - stages['preprocess']
    fetch = k * GROUP_OVERFETCH if form.group_by == 'sighting' else k
    with _engine_errors():
        results = await search_gallery(state, snap, decoded, fetch, threshold, flt, cams, thumbnail, stages,
                                       group=form.group, visible_parts=form.visibility)
    if form.group_by == 'sighting':
        results = await group_by_sighting(state, results, k)
    request.state.search_stages, request.state.handler_done = stages, time.perf_counter()  # "answer": app.main
    audit.note(request, k=k, results=sum(len(r.matches) for r in results), filters=_form_filters(form, len(images)))
    return SearchResponse(model_id=snap.model_id, score_kind=scoring.kind, min_score=threshold, k=k,
                          results=results)


class PooledSearch:
    """The query parameters of a search from stored vectors pooled into one query (a person's, a sighting's)."""

    def __init__(self, k: Optional[int] = Query(None, ge=1, le=100, description='matches (default from settings)'),
                 min_score: Optional[float] = Query(None, ge=-1, le=1, description='as for /v1/search'),
                 camera_id: Optional[str] = Query(None, description='only these cameras (comma list)'),
                 after: Optional[str] = Query(None, description='only at or after (ISO 8601)'),
                 before: Optional[str] = Query(None, description='only at or before (ISO 8601)'),
                 tags: Optional[str] = Query(None, description='only with all these tags (comma list)'),
                 visibility: bool = Query(True, description='as for /v1/search')) -> None:
        self.k, self.min_score, self.visibility = k, min_score, visibility
        self.filter = GalleryFilter.of(camera_ids=int_list('camera_id', camera_id), after=when('after', after),
                                       before=when('before', before), tags=str_list(tags))

    async def answer(self, request: Request, state, snap, search, of: int, not_found: type) -> SearchResponse:
        """``search(state, snap, of, k, threshold, filter, thumbnail_url, visible_parts=...)`` answered, within the
        key's sites (the filter's ``sites``: what is searched, and whose images make the query); its ``not_found``
        (no such person or sighting) is a 404."""
        flt = self.filter.within(request.state.principal.scope)
        k = self.k or state.settings.default_k
        scoring = snap.scoring(self.visibility)
        threshold = scoring.min_score if self.min_score is None else self.min_score
        try:
            with _engine_errors():
                result = await search(state, snap, of, k, threshold, flt, _thumbnail_template(request.app),
                                      visible_parts=self.visibility)
        except not_found as e:
            raise HTTPException(status_code=404, detail=str(e)) from None
        audit.note(request, k=k, results=len(result.matches))
        return SearchResponse(model_id=snap.model_id, score_kind=scoring.kind, min_score=threshold, k=k,
                              results=[result])


@router.post('/persons/{person_id}/search', response_model=SearchResponse, tags=['persons'])
async def search_for_person(person_id: IdPath, request: Request, state: StateDep, snap: SnapshotDep,
                            query: Annotated[PooledSearch, Depends()]):
    """A known person's other sightings: their gallery images (up to the 256 most recent), pooled into one
    multi-shot query, against the rest of the gallery (their own images left out)."""
    return await query.answer(request, state, snap, search_person, person_id, PersonNotFound)
