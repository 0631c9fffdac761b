"""Search ("who is this?"), the whole step: the query's filter, the model's forward, the vector engine's filtered
search (the engine evaluates the filter itself: no list of ids comes from SQL), threshold and result assembly. No
database session is held while the model runs."""
import asyncio
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from starlette.concurrency import run_in_threadpool

from reid.matching import pool_parts
from storage import crud
from storage.crud import GalleryRecord
from storage.engine import GalleryFilter, Hits

from .imaging import DecodedImage
from .schemas import QueryResult, SearchMatch
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ['search_gallery', 'search_person', 'PersonNotFound', 'MatchRows']


class MatchRows:
    """What answers show of gallery rows (id, person, camera, time, tags, file name), by id, kept in memory: in the
    service, SQLAlchemy's work for a search's one 10-row query cost ~0.9 ms of CPU, and a dict lookup next to
    nothing (docs/benchmarks.md 5b). Gallery rows are only ever added and deleted, never changed, and each add or
    delete passes through the change log, whose follower forgets the ids it touches (app.changelog). So a cached
    row is the database's row, except that a row deleted by another replica is shown until this replica follows
    the log (``sync_seconds``) - as long as its vector stays in this replica's index anyway. Least recently used
    rows go beyond ``max_rows``."""

    def __init__(self, session_factory: Callable[[], Any], max_rows: int = 100_000) -> None:
        self._session_factory = session_factory
        self.max_rows = max_rows
        self._rows: 'OrderedDict[int, Any]' = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every forget: a fetch that raced one is not cached

    def cached(self, image_ids: Iterable[int]) -> Tuple[Dict[int, GalleryRecord], List[int]]:
        """(rows in memory by id, the other ids): no database access, so the event loop may ask."""
        ids = sorted({int(i) for i in image_ids})
        with self._lock:
            found = {i: self._rows[i] for i in ids if i in self._rows}
            for i in found:
                self._rows.move_to_end(i)
        return found, [i for i in ids if i not in found]

    def get(self, image_ids: Iterable[int]) -> Dict[int, GalleryRecord]:
        """Rows by id (from the database for those not in memory); ids without a row are absent."""
        with self._lock:
            generation = self._generation
        found, missing = self.cached(image_ids)
        if missing:
            with self._session_factory() as s:
                fetched = crud.get_match_rows(session=s, image_ids=missing)
            found.update(fetched)
            with self._lock:
                if generation == self._generation:
                    self._rows.update(fetched)
                    while len(self._rows) > self.max_rows:
                        self._rows.popitem(last=False)
        return found

    def forget(self, image_ids: Iterable[int]) -> None:
        with self._lock:
            self._generation += 1
            for i in image_ids:
                self._rows.pop(int(i), None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._rows.clear()


# A shared engine may still return, for a moment, a vector whose row another client deleted (Milvus below Strong
# consistency): such hits are dropped when answers are joined with the database's rows, so a few more are fetched.
STALE_MARGIN = 8


def query_filters(flt: GalleryFilter, exclude_cameras: Sequence[Optional[int]]) -> List[GalleryFilter]:
    """Each query's filter: the request's, less the query's own camera where it is given."""
    return [flt.excluding_camera(cam) for cam in exclude_cameras]


async def search_gallery(service: 'ServiceState', snap: Snapshot, queries: Sequence[DecodedImage], k: int,
                         threshold: float, flt: GalleryFilter, exclude_cameras: Sequence[Optional[int]],
                         thumbnail_url: str, timings: Optional[Dict[str, float]] = None,
                         group: bool = False) -> List[QueryResult]:
    """Top-``k`` matches per query among what ``flt`` admits; ``exclude_cameras[i]``: query i's camera, whose
    gallery images it skips (None: none skipped); ``thumbnail_url`` has an ``{image_id}`` placeholder. ``timings``
    gets each stage's seconds. ``group``: the queries are crops of one person, pooled into one query
    (reid.matching.pool_parts; ``exclude_cameras`` then has one entry). Raises storage.engine.FilterNotSupported /
    EngineUnavailable (the route answers 422 / 503).

    Runs in the event loop: the model thread's Future is awaited (an embedded engine's search runs there, right
    after the forward; a shared engine's in a worker thread), and the database is asked only for rows not in
    memory; a plain search makes no other trip between threads."""
    timings = {} if timings is None else timings
    filters = query_filters(flt, exclude_cameras)
    for each in set(filters):
        snap.engine.check_filter(each)
    future = service.submit_search(snap, [q.image for q in queries], k, filters, timings, group=group)
    if snap.engine.shared:
        xq = await asyncio.wrap_future(future)
        t0 = time.perf_counter()
        hits: List[Hits] = await run_in_threadpool(snap.engine.search, xq, k + STALE_MARGIN, filters)
        timings['index_search'] = time.perf_counter() - t0
    else:
        hits = await asyncio.wrap_future(future)
    named = [', '.join(q.filename for q in queries)] if group else [q.filename for q in queries]
    return await _answers(service, snap, named, hits, k, threshold, thumbnail_url, timings)


MAX_PERSON_SHOTS = 256  # a person's gallery images pooled into one query (the most recent ones)


class PersonNotFound(LookupError):
    """The person has no gallery image embedded by the active model."""


async def search_person(service: 'ServiceState', snap: Snapshot, person_id: int, k: int, threshold: float,
                        flt: GalleryFilter, thumbnail_url: str) -> QueryResult:
    """A known person's other sightings: their gallery images' stored vectors pooled into one query
    (reid.matching.pool_parts), the top ``k`` among what ``flt`` admits, those images themselves left out."""
    def own_vectors():
        with service.Session() as s:
            ids = crud.latest_image_ids(session=s, person_id=person_id, limit=MAX_PERSON_SHOTS)
            return crud.get_vectors(session=s, model_id=snap.model_id, image_ids=ids)
    vectors = await run_in_threadpool(own_vectors)
    if not vectors:
        raise PersonNotFound(f'person {person_id} has no gallery image embedded by the active model')
    snap.engine.check_filter(flt)
    query = pool_parts(np.stack(list(vectors.values())), snap.embedder.num_parts)[None]
    fetch = k + len(vectors) + (STALE_MARGIN if snap.engine.shared else 0)
    search = snap.engine.search if snap.engine.shared else \
        (lambda *args: service.on_model_thread(snap.engine.search, *args))  # FAISS calls: on the model thread
    (D, I), = await run_in_threadpool(search, query, fetch, [flt])
    keep = ~np.isin(I, np.fromiter(vectors, np.int64))
    results = await _answers(service, snap, [f'person {person_id} ({len(vectors)} gallery images)'],
                             [(D[keep], I[keep])], k, threshold, thumbnail_url, {})
    return results[0]


async def _answers(service: 'ServiceState', snap: Snapshot, filenames: Sequence[str], hits: Sequence[Hits], k: int,
                   threshold: float, thumbnail_url: str, timings: Dict[str, float]) -> List[QueryResult]:
    """Hits joined with their gallery rows (from memory where cached), as answers with the model's score of each
    cosine (its calibration, if it has one); ``threshold`` is on the score's scale."""
    t0 = time.perf_counter()
    rows, missing = service.match_rows.cached(i for _, I in hits for i in I if i >= 0)
    if missing:
        rows.update(await run_in_threadpool(service.match_rows.get, missing))
    timings['database'] = time.perf_counter() - t0
    results = []
    for qi, (filename, (D, I)) in enumerate(zip(filenames, hits)):
        scores = snap.score(D)
        matches = [SearchMatch(
            image_id=row.id, score=float(score), cosine=float(cosine), person_id=row.person_id,
            camera_id=row.camera_id, timestamp=row.timestamp, tags=list(row.tags), source_name=row.source_name,
            thumbnail_url=thumbnail_url.replace('{image_id}', str(row.id)), above_threshold=bool(score >= threshold))
            for cosine, score, image_id in zip(D, scores, I) if (row := rows.get(int(image_id))) is not None][:k]
        best = matches[0] if matches else None
        hit = best is not None and best.above_threshold
        results.append(QueryResult(query_index=qi, filename=filename, no_match=not hit,
                                   person_id=best.person_id if hit else None,
                                   best_score=best.score if best else None, matches=matches))
    return results
