"""Search ("who is this?"), the whole step: the query's filter, the model's forward, the vector engine's filtered
search (the engine evaluates the filter itself: no list of ids comes from SQL), threshold and result assembly. No
database session is held while the model runs."""
import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence

import numpy as np
from starlette.concurrency import run_in_threadpool

from reid.matching import as_query, part_cosines, part_visibility, plain_parts, pool_visible, rescore_mutual
from storage import crud
from storage.engine import GalleryFilter, Hits

from .imaging import DecodedImage
from .schemas import QueryResult, SearchMatch
from .snapshot import Scoring, Snapshot

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ['search_gallery', 'search_person', 'search_pooled', 'pooled_query', 'rescore', 'exact_scores',
           'PersonNotFound', 'engine_search', 'search_blocking']


def with_margin(snap: Snapshot, k: int) -> int:
    """``k`` plus the engine's stale margin: hits whose row is gone are dropped when answers are joined with the
    database's rows, and the answer still has ``k``."""
    return k + snap.engine.stale_margin


def engine_search(snap: Snapshot, xq: np.ndarray, k: int, filters: Sequence[Optional[GalleryFilter]]) -> List[Hits]:
    """The one place a search meets the engine. Where it runs: an in-process engine's on the model thread (right
    after the forward in app.state.submit_search, else through :func:`_search`), a remote one's in a worker
    thread, which it would otherwise hold up."""
    return snap.engine.search(xq, with_margin(snap, k), filters)


def search_blocking(service: 'ServiceState', snap: Snapshot, xq: np.ndarray, k: int,
                    filters: Sequence[Optional[GalleryFilter]]) -> List[Hits]:
    """:func:`_search` from a thread of the service's own (not the event loop): the same rule of where it runs."""
    if snap.engine.remote:
        return engine_search(snap, xq, k, filters)
    return service.on_model_thread(engine_search, snap, xq, k, filters)


async def _search(service: 'ServiceState', snap: Snapshot, xq: np.ndarray, k: int,
                  filters: Sequence[Optional[GalleryFilter]], timings: Dict[str, float]) -> List[Hits]:
    """:func:`engine_search` for vectors already at hand, on the thread it belongs to."""
    t0 = time.perf_counter()
    if snap.engine.remote:
        hits = await run_in_threadpool(engine_search, snap, xq, k, filters)
    else:
        hits = await asyncio.wrap_future(service.model_thread.submit_call(engine_search, snap, xq, k, filters))
    timings['index_search'] = time.perf_counter() - t0
    return hits


def query_filters(flt: GalleryFilter, exclude_cameras: Sequence[Optional[int]]) -> List[GalleryFilter]:
    """Each query's filter: the request's, less the query's own camera where it is given."""
    return [flt.excluding_camera(cam) for cam in exclude_cameras]


# a model with the visibility head: the index's first pass ranks by the score's numerator, and this many times k
# candidates (at least k + RESCORE_EXTRA) get the exact score
RESCORE_DEPTH, RESCORE_EXTRA = 4, 32


def first_pass_k(snap: Snapshot, k: int) -> int:
    return max(RESCORE_DEPTH * k, k + RESCORE_EXTRA) if snap.visible_parts else k


async def search_gallery(service: 'ServiceState', snap: Snapshot, queries: Sequence[DecodedImage], k: int,
                         threshold: float, flt: GalleryFilter, exclude_cameras: Sequence[Optional[int]],
                         thumbnail_url: str, timings: Optional[Dict[str, float]] = None,
                         group: bool = False, visible_parts: bool = True) -> List[QueryResult]:
    """Top-``k`` matches per query among what ``flt`` admits; ``exclude_cameras[i]``: query i's camera, whose
    gallery images it skips (None: none skipped); ``thumbnail_url`` has an ``{image_id}`` placeholder. ``timings``
    gets each stage's seconds. ``group``: the queries are crops of one person, pooled into one query
    (reid.matching.pool_visible; ``exclude_cameras`` then has one entry). A model with the visibility head scores
    on the parts both images show (:func:`rescore`; ``visible_parts=False``: plain part cosines). Raises
    storage.engine.FilterNotSupported / EngineUnavailable (the route answers 422 / 503).

    Runs in the event loop: the model thread's Future is awaited (an embedded engine's search runs there, right
    after the forward; a shared engine's in a worker thread), and the database is asked only for rows not in
    memory; a plain search makes no other trip between threads."""
    timings = {} if timings is None else timings
    filters = query_filters(flt, exclude_cameras)
    for each in set(filters):
        snap.engine.check_filter(each)
    fetch = first_pass_k(snap, k)
    future = service.submit_search(snap, [q.image for q in queries], fetch, filters, timings, group=group,
                                   visible_parts=visible_parts)
    xq, hits = await asyncio.wrap_future(future)
    if hits is None:  # a remote engine: searched here, off the model thread
        hits = await _search(service, snap, xq, fetch, filters, timings)
    if snap.visible_parts:
        hits = await rescore(service, snap, xq, hits, visible_parts, timings, k)
    named = [', '.join(q.filename for q in queries)] if group else [q.filename for q in queries]
    visibility = part_visibility(xq, snap.embedder.num_parts) if snap.visible_parts and visible_parts else None
    return await _answers(service, snap.scoring(visible_parts), named, hits, k, threshold, thumbnail_url, timings,
                          visibility)


async def rescore(service: 'ServiceState', snap: Snapshot, xq: np.ndarray, hits: Sequence[Hits], visible_parts: bool,
                  timings: Dict[str, float], k: int) -> List[Hits]:
    """The exact scores of the index's candidates, the best ``k`` (:func:`with_margin`) first: on the parts both
    images show
    (reid.matching.rescore_mutual, the gallery's visibilities from memory: app.row_cache.gallery_visibility), or
    with ``visible_parts=False`` the plain mean of the part cosines (reid.matching.part_cosines, from the
    candidates' stored vectors). Candidates without a stored vector (deleted meanwhile) are dropped."""
    t0 = time.perf_counter()
    ids = {i for _, I in hits for i in I.tolist() if i >= 0}
    if visible_parts:
        found, missing = snap.gallery_visibility.cached(ids)
        if missing:
            found.update(await run_in_threadpool(snap.gallery_visibility.get, missing))
    else:
        def stored_vectors():
            with service.Session() as s:
                return crud.get_vectors(session=s, model_id=snap.model_id, image_ids=sorted(ids))
        found = await run_in_threadpool(stored_vectors)
    top = with_margin(snap, k)
    out = [exact_scores(snap, query, D, I, found, visible_parts, top) for query, (D, I) in zip(xq, hits)]
    timings['rescore'] = time.perf_counter() - t0
    return out


def exact_scores(snap: Snapshot, query: np.ndarray, D: np.ndarray, I: np.ndarray, found: Dict[int, np.ndarray],
                 visible_parts: bool, top: int) -> Hits:
    """One query's candidates (``D``, ``I``) scored exactly, the best ``top`` first, from ``found``: their
    gallery visibilities (``visible_parts``) or stored vectors (see :func:`rescore`); candidates not in ``found``
    are dropped."""
    parts = snap.embedder.num_parts
    keep = [j for j, i in enumerate(I.tolist()) if i in found]
    D, I = D[keep], I[keep]
    if len(I):
        candidates = np.stack([found[i] for i in I.tolist()]).astype(np.float32)
        D = rescore_mutual(D, part_visibility(query[None], parts)[0], candidates) if visible_parts \
            else part_cosines(query, candidates, parts)
        order = np.argsort(-D, kind='stable')[:top]  # only these reach the answer
        D, I = D[order], I[order]
    return D, I


MAX_PERSON_SHOTS = 256  # a person's gallery images pooled into one query (the most recent ones)


class PersonNotFound(LookupError):
    """The person has no gallery image embedded by the active model."""


async def search_person(service: 'ServiceState', snap: Snapshot, person_id: int, k: int, threshold: float,
                        flt: GalleryFilter, thumbnail_url: str, visible_parts: bool = True) -> QueryResult:
    """A known person's other sightings: their gallery images' stored vectors (the latest
    :data:`MAX_PERSON_SHOTS`) pooled into one query (reid.matching.pool_visible), the top ``k`` among what ``flt``
    admits; every image of the person is left out by the engine's filter."""
    def own_vectors():
        with service.Session() as s:  # only the images of the sites searched make the query
            ids = crud.latest_image_ids(session=s, person_id=person_id, limit=MAX_PERSON_SHOTS,
                                        sites=flt.sites or None)
            return crud.get_vectors(session=s, model_id=snap.model_id, image_ids=ids)
    vectors = await run_in_threadpool(own_vectors)
    if not vectors:
        raise PersonNotFound(f'person {person_id} has no gallery image embedded by the active model')
    return await search_pooled(service, snap, vectors, f'person {person_id} ({len(vectors)} gallery images)', k,
                               threshold, replace(flt, exclude_person=person_id), thumbnail_url, visible_parts)


def pooled_query(snap: Snapshot, stored: Iterable[np.ndarray]) -> np.ndarray:
    """Stored gallery vectors of one person as one multi-shot query (1, D): back in a query's form, pooled
    visibility-weighted (reid.matching.as_query, pool_visible)."""
    parts = snap.embedder.num_parts
    shots = np.stack(list(stored))
    return pool_visible(as_query(shots, parts) if snap.visible_parts else shots, parts)[None]


async def search_pooled(service: 'ServiceState', snap: Snapshot, vectors: Dict[int, np.ndarray], label: str, k: int,
                        threshold: float, flt: GalleryFilter, thumbnail_url: str,
                        visible_parts: bool = True) -> QueryResult:
    """Stored gallery vectors (by image id) of one person pooled into one multi-shot query
    (reid.matching.pool_visible), the top ``k`` among what ``flt`` admits (which leaves the shots' own images
    out); ``label``: the answer's filename."""
    snap.engine.check_filter(flt)
    parts = snap.embedder.num_parts
    query = pooled_query(snap, vectors.values())
    if snap.visible_parts and not visible_parts:
        query = plain_parts(query, parts)
    timings: Dict[str, float] = {}
    hits = await _search(service, snap, query, first_pass_k(snap, k), [flt], timings)
    if snap.visible_parts:
        hits = await rescore(service, snap, query, hits, visible_parts, timings, k)
    visibility = part_visibility(query, parts) if snap.visible_parts and visible_parts else None
    results = await _answers(service, snap.scoring(visible_parts), [label], hits, k, threshold, thumbnail_url,
                             timings, visibility)
    return results[0]


async def _answers(service: 'ServiceState', score: Scoring, filenames: Sequence[str], hits: Sequence[Hits], k: int,
                   threshold: float, thumbnail_url: str, timings: Dict[str, float],
                   visibility: Optional[np.ndarray] = None) -> List[QueryResult]:
    """Hits joined with their gallery rows (from memory where cached), as answers with ``score`` of each
    similarity; ``threshold`` is on the score's scale. ``visibility``: the queries'
    per-part visibility (n, parts), shown in the answers."""
    t0 = time.perf_counter()
    rows, missing = service.match_rows.cached(i for _, I in hits for i in I if i >= 0)
    if missing:
        rows.update(await run_in_threadpool(service.match_rows.get, missing))
    timings['database'] = time.perf_counter() - t0
    results = []
    for qi, (filename, (D, I)) in enumerate(zip(filenames, hits)):
        scores = score(D)
        matches = [SearchMatch(
            image_id=row.id, score=float(score), cosine=float(cosine), person_id=row.person_id,
            camera_id=row.camera_id, timestamp=row.timestamp, tags=list(row.tags), source_name=row.source_name,
            thumbnail_url=thumbnail_url.replace('{image_id}', str(row.id)), above_threshold=bool(score >= threshold),
            sighting_id=row.sighting_id)
            for cosine, score, image_id in zip(D, scores, I) if (row := rows.get(int(image_id))) is not None][:k]
        best = matches[0] if matches else None
        hit = best is not None and best.above_threshold
        results.append(QueryResult(query_index=qi, filename=filename, no_match=not hit,
                                   person_id=best.person_id if hit else None,
                                   best_score=best.score if best else None, matches=matches,
                                   visibility=None if visibility is None else
                                   [round(float(v), 3) for v in visibility[qi]]))
    return results
