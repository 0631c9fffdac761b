from typing import List, Optional

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from storage import crud

from ..deps import MAX_ID, SnapshotDep, StateDep
from ..forms import int_list, read_images, str_list, when
from ..schemas import ERRORS, QueryResult, SearchMatch, SearchResponse

router = APIRouter(prefix='/v1', tags=['search'], responses=ERRORS)


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
    decoded = await read_images(images, state.settings)
    k = k or state.settings.default_k
    threshold = snap.min_score if min_score is None else min_score
    query_cams = int_list('query_camera_id', query_camera_id)
    if exclude_same_camera and (query_cams is None or len(query_cams) not in (1, len(decoded))):
        raise HTTPException(status_code=400,
                            detail='exclude_same_camera needs query_camera_id: one value, or one per image')
    filters = dict(person_id=person_id, camera_ids=int_list('camera_id', camera_id),
                   after=when('after', after), before=when('before', before), tags=str_list(tags))
    with state.Session() as s:
        allowed_by_camera = {}  # query camera (None: no exclusion) -> allowed ids, or None for the whole gallery

        def allowed_for(cam):
            if cam not in allowed_by_camera:
                active = any(v for v in filters.values()) or cam is not None
                allowed_by_camera[cam] = np.asarray(crud.filter_image_ids(
                    session=s, exclude_camera=cam, **filters), dtype=np.int64) if active else None
            return allowed_by_camera[cam]

        cams = [(query_cams[0] if len(query_cams) == 1 else query_cams[qi]) if exclude_same_camera else None
                for qi in range(len(decoded))]
        hits = await run_in_threadpool(state.search, snap, [d.image for d in decoded], k,
                                       [allowed_for(cam) for cam in cams])
        results = []
        thumbnail = request.app.url_path_for('gallery_thumbnail', image_id='{image_id}')
        for qi, (item, (D, I)) in enumerate(zip(decoded, hits)):
            rows = crud.get_match_rows(session=s, image_ids=[i for i in I if i >= 0])
            matches = [SearchMatch(
                image_id=row.id, score=float(score), person_id=row.person_id, camera_id=row.camera_id,
                timestamp=row.timestamp, tags=row.tags or [], source_name=row.source_name,
                thumbnail_url=thumbnail.replace('{image_id}', str(row.id)),
                above_threshold=bool(score >= threshold))
                for score, image_id in zip(D, I) if (row := rows.get(int(image_id))) is not None]
            best = matches[0] if matches else None
            hit = best is not None and best.above_threshold
            results.append(QueryResult(query_index=qi, filename=item.filename, no_match=not hit,
                                       person_id=best.person_id if hit else None,
                                       best_score=best.score if best else None, matches=matches))
    return SearchResponse(model_id=snap.model_id, min_score=threshold, k=k, results=results)
