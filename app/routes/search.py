import time
from typing import List, Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile

from ..deps import MAX_ID, SnapshotDep, StateDep, require_read
from ..forms import int_list, read_images, str_list, when
from ..imaging import DecodedImage
from ..schemas import ERRORS, QueryResult, SearchResponse
from ..search_service import search_gallery

router = APIRouter(prefix='/v1', tags=['search'], dependencies=[Depends(require_read)], responses=ERRORS)


@router.post('/search', response_model=SearchResponse)
async def search(
        request: Request, state: StateDep, snap: SnapshotDep,
        images: List[UploadFile] = File(..., description='one or more query images (batch query)'),
        k: Optional[int] = Form(None, ge=1, le=100, description='matches per query (default from settings)'),
        min_score: Optional[float] = Form(None, ge=-1, le=1,
                                          description="below this cosine similarity: no match (default: the "
                                                      "model's calibrated threshold)"),
        camera_id: Optional[str] = Form(None, description='only gallery images from these cameras (comma list)'),
        person_id: Optional[int] = Form(None, ge=0, le=MAX_ID, description='only this person'),
        after: Optional[str] = Form(None), before: Optional[str] = Form(None),
        tags: Optional[str] = Form(None, description='gallery images having all these tags (comma list)'),
        query_camera_id: Optional[str] = Form(None, description="the queries' camera (one, or one per image)"),
        exclude_same_camera: bool = Form(False, description="skip gallery images from the query's camera"),
):
    """Who is this? Top-k gallery matches per query image, or an explicit no-match below ``min_score``."""
    entered = time.perf_counter()
    stages = {'receive': entered - getattr(request.state, 'amg_start', entered)}  # amg_start: app.main
    settings = state.settings
    k = k or settings.default_k
    threshold = snap.min_score if min_score is None else min_score
    query_cams = int_list('query_camera_id', query_camera_id)
    if exclude_same_camera and (query_cams is None or len(query_cams) not in (1, len(images))):
        raise HTTPException(status_code=400,
                            detail='exclude_same_camera needs query_camera_id: one value, or one per image')
    filters = dict(person_id=person_id, camera_ids=int_list('camera_id', camera_id),
                   after=when('after', after), before=when('before', before), tags=str_list(tags))
    cams = [(query_cams[0] if len(query_cams) == 1 else query_cams[qi]) if exclude_same_camera else None
            for qi in range(len(images))]
    thumbnail = request.app.url_path_for('gallery_thumbnail', image_id='{image_id}')

    def search_decoded(decoded: List[DecodedImage]) -> List[QueryResult]:
        stages['preprocess'] = sum(d.prepare_seconds for d in decoded)
        stages['decode'] = time.perf_counter() - entered - stages['preprocess']
        return search_gallery(state, snap, decoded, k, threshold, filters, cams, thumbnail, stages)

    # preprocessed where decoded: a queued search holds model inputs (~100 kB an image), not full-size pixels
    results = await read_images(images, settings, state.decode_limiter, prepare=snap.embedder.preprocess,
                                then=search_decoded)
    request.state.search_stages, request.state.handler_done = stages, time.perf_counter()  # "answer": app.main
    return SearchResponse(model_id=snap.model_id, min_score=threshold, k=k, results=results)
