"""Search ("who is this?"): filters to allowed ids, the model's forward and the index search, threshold and result
assembly. No database session is held while the model runs."""
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np

from storage import crud

from .imaging import DecodedImage
from .schemas import QueryResult, SearchMatch

if TYPE_CHECKING:
    from .state import ServiceState, Snapshot

__all__ = ['search_gallery']


def _allowed_ids(service: 'ServiceState', filters: Dict[str, Any],
                 cameras: Sequence[Optional[int]]) -> List[Optional[np.ndarray]]:
    """Per query, the ids it may match (None: the whole gallery), one database query per distinct camera."""
    if not any(v for v in filters.values()) and all(cam is None for cam in cameras):
        return [None] * len(cameras)
    by_camera: Dict[Optional[int], Optional[np.ndarray]] = {}
    with service.Session() as s:
        for cam in set(cameras):
            by_camera[cam] = np.asarray(crud.filter_image_ids(session=s, exclude_camera=cam, **filters),
                                        dtype=np.int64)
    return [by_camera[cam] for cam in cameras]


def search_gallery(service: 'ServiceState', snap: 'Snapshot', queries: Sequence[DecodedImage], k: int,
                   threshold: float, filters: Dict[str, Any], exclude_cameras: Sequence[Optional[int]],
                   thumbnail_url: str, timings: Optional[Dict[str, float]] = None) -> List[QueryResult]:
    """Top-``k`` matches per query; ``exclude_cameras[i]``: query i's camera, whose gallery images it skips (None:
    none skipped); ``thumbnail_url`` has an ``{image_id}`` placeholder. ``timings`` gets each stage's seconds."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    allowed = _allowed_ids(service, filters, exclude_cameras)
    database = time.perf_counter() - t0
    hits = service.search(snap, [q.image for q in queries], k, allowed, timings)
    t0 = time.perf_counter()
    with service.Session() as s:
        rows = crud.get_match_rows(session=s, image_ids=sorted({int(i) for _, I in hits for i in I if i >= 0}))
    timings['database'] = database + time.perf_counter() - t0
    results = []
    for qi, (item, (D, I)) in enumerate(zip(queries, hits)):
        matches = [SearchMatch(
            image_id=row.id, score=float(score), person_id=row.person_id, camera_id=row.camera_id,
            timestamp=row.timestamp, tags=row.tags or [], source_name=row.source_name,
            thumbnail_url=thumbnail_url.replace('{image_id}', str(row.id)), above_threshold=bool(score >= threshold))
            for score, image_id in zip(D, I) if (row := rows.get(int(image_id))) is not None]
        best = matches[0] if matches else None
        hit = best is not None and best.above_threshold
        results.append(QueryResult(query_index=qi, filename=item.filename, no_match=not hit,
                                   person_id=best.person_id if hit else None,
                                   best_score=best.score if best else None, matches=matches))
    return results
