"""What searches read of gallery rows by id, kept in memory: the rows the answers show (:class:`MatchRows`) and, for
a model with the visibility head, each gallery image's per-part visibility (:func:`gallery_visibility`)."""
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Tuple

import numpy as np

from reid.matching import part_weights
from storage import crud

__all__ = ['RowCache', 'MatchRows', 'gallery_visibility']

Fetch = Callable[..., Dict[int, Any]]  # fetch(session=..., image_ids=[...]) -> {id: value}; absent ids: no value


class RowCache:
    """Values by gallery image id, kept in memory, fetched from the database for ids not in memory. Gallery rows
    (and a model's vectors of them) are only ever added and deleted, never changed, and each add or delete passes
    through the change log, whose follower forgets the ids it touches (app.changelog). So a cached value is the
    database's, except that a row deleted by another replica is shown until this replica follows the log
    (``sync_seconds``) - as long as its vector stays in this replica's index anyway. Least recently used values go
    beyond ``max_rows``."""

    def __init__(self, session_factory: Callable[[], Any], fetch: Fetch, max_rows: int = 100_000) -> None:
        self._session_factory = session_factory
        self._fetch = fetch
        self.max_rows = max_rows
        self._rows: 'OrderedDict[int, Any]' = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every forget: a fetch that raced one is not cached

    def cached(self, image_ids: Iterable[int]) -> Tuple[Dict[int, Any], List[int]]:
        """(values in memory by id, the other ids): no database access, so the event loop may ask."""
        ids = sorted({int(i) for i in image_ids})
        with self._lock:
            found = {i: self._rows[i] for i in ids if i in self._rows}
            for i in found:
                self._rows.move_to_end(i)
        return found, [i for i in ids if i not in found]

    def get(self, image_ids: Iterable[int]) -> Dict[int, Any]:
        """Values by id (from the database for those not in memory); ids without one are absent."""
        with self._lock:
            generation = self._generation
        found, missing = self.cached(image_ids)
        if missing:
            with self._session_factory() as s:
                fetched = self._fetch(session=s, image_ids=missing)
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


class MatchRows(RowCache):
    """What answers show of gallery rows (id, person, camera, time, tags, file name): in the service, SQLAlchemy's
    work for a search's one 10-row query cost ~0.9 ms of CPU, and a dict lookup next to nothing
    (docs/benchmarks.md 5b)."""

    def __init__(self, session_factory: Callable[[], Any], max_rows: int = 100_000) -> None:
        super().__init__(session_factory, crud.gallery_records, max_rows)


def gallery_visibility(session_factory: Callable[[], Any], model_id: int, parts: int,
                       max_rows: int = 200_000) -> RowCache:
    """Each gallery image's per-part visibility by ``model_id`` (parts,), read back from the part norms of its
    stored vector (reid.matching.part_weights: proportional to the visibilities, all the denominator of the
    mutually-visible-part re-score needs). A small float16 array a row (~150 bytes with its dict entry: 30 MB at the default bound); beyond it, the least recently
    used are read again from the database when a search needs them."""
    def fetch(*, session, image_ids: List[int]) -> Dict[int, np.ndarray]:
        vectors = crud.get_vectors(session=session, model_id=model_id, image_ids=image_ids)
        if not vectors:
            return {}
        ids = list(vectors)
        vis = part_weights(np.stack([vectors[i] for i in ids]), parts).astype(np.float16)
        return dict(zip(ids, vis))
    return RowCache(session_factory, fetch, max_rows)
