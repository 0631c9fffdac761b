"""Keeping a vector engine equal to the gallery: a full reconcile (start-up, activation) and, after it, following the
gallery change log that every replica writes.

An embedded engine (FAISS) is this replica's own: its position in the log lives in memory. A shared engine (one
Milvus collection for all replicas) has one position, kept in the database (``engine_positions``, through
:class:`DatabasePositions`); replicas take turns under a lock every replica honours, each continuing where the last
stopped (storage.engine.VectorEngine.following). Applying a change looks at the row as it is now (present: upsert
its vector; gone: delete), so applying it twice, or late, does no harm.

What this replica keeps in memory of gallery rows (app.row_cache) follows the log on its own position
(:class:`LogCursor`), whichever replica applied the changes to a shared engine.
"""
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from sqlalchemy.engine import Engine

from storage import crud
from storage.engine import VectorEngine
from storage.locks import lock_key, replica_lock

from .metrics import Metrics
from .row_cache import MatchRows
from .snapshot import Snapshot
from .vector_feed import VectorFeed

__all__ = ['ChangeLogFollower', 'DatabasePositions', 'LogCursor', 'Health']

_logger = logging.getLogger(__name__)
# rows read, vectorised and indexed at a time by a full reconcile: a start over 100,000 rows in one piece peaked at
# 2.56 GB RSS, in pieces 2.16 GB (by hand: ServiceState.startup alone on a padded gallery; the index is 0.6 GB)
RECONCILE_CHUNK = 5000


class DatabasePositions:
    """Shared engines' change-log positions in the database (storage.engine.PositionStore), moved under a lock
    every replica honours."""

    def __init__(self, session_factory: Callable, database: Engine, lock_dir: Path) -> None:
        self.Session = session_factory
        self.database = database  # replicas' locks (PostgreSQL advisory locks)
        self.lock_dir = lock_dir  # otherwise lock files here

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        with replica_lock([lock_key(f'engine:{key}')], self.lock_dir / f'.engine-{key}.lock', self.database):
            yield

    def read(self, key: str) -> Tuple[int, Dict[int, float]]:
        with self.Session() as s:
            return crud.get_engine_position(session=s, collection=key)

    def write(self, key: str, seq: int, awaited: Dict[int, float]) -> None:
        with self.Session.begin() as s:
            crud.put_engine_position(session=s, collection=key, applied_seq=seq, awaited=awaited)


@dataclass
class LogCursor:
    """A position in the gallery change log: every seq up to ``seq`` seen, except the ``awaited`` ones (seq ->
    since when, monotonic seconds). Seqs can become visible out of order (concurrent writers on PostgreSQL): a
    skipped one is asked for again until it appears or the gap expires (a rolled-back transaction leaves a hole)."""
    seq: int = 0
    awaited: Dict[int, float] = field(default_factory=dict)

    def advance(self, seqs: Sequence[int], now: float, gap_seconds: float) -> None:
        """Seqs ``seqs`` (ascending) were read."""
        expected = self.seq + 1
        for seq in seqs:
            self.awaited.pop(seq, None)
            if seq >= expected:
                for hole in range(expected, seq):
                    self.awaited.setdefault(hole, now)
                expected = seq + 1
        self.seq = max(self.seq, expected - 1)
        for hole, since in list(self.awaited.items()):
            if now - since > gap_seconds:
                del self.awaited[hole]


@dataclass(frozen=True)
class Health:
    """What /readyz reports, as the maintenance loop last found it (a probe starts no work)."""
    model_id: int
    consistent: bool  # the engine had applied the whole log and held as many vectors as the gallery has rows
    gallery_vectors: int
    behind: int  # changes logged that the engine had not applied
    applied_seq: int  # the engine's position when checked: a check is due once it moves
    checked_at: float  # time.time()
    ids_differ: bool = False  # the last comparison of every id found others (counts alone cannot clear it)
    ids_checked_at: float = 0.0  # time.monotonic() of that comparison (0: none yet)


class ChangeLogFollower:
    def __init__(self, session_factory: Callable, database: Engine, lock_dir: Path, write_lock: threading.RLock,
                 feed: VectorFeed, match_rows: MatchRows, sync_gap_seconds: float, metrics: Metrics,
                 current: Callable[[], Optional[Snapshot]]) -> None:
        self.Session = session_factory
        self.positions = DatabasePositions(session_factory, database, lock_dir)
        self.write_lock = write_lock  # uploads, deletes, the model swap
        self.feed = feed
        self.match_rows = match_rows
        self.sync_gap_seconds = sync_gap_seconds
        self.metrics = metrics
        self.current = current
        self.cache_cursor = LogCursor()  # how far this replica's row caches have followed the log
        self._cache_lock = threading.Lock()
        self.health: Optional[Health] = None  # None: not checked yet

    def position(self, engine: VectorEngine):
        """Around applying changes to ``engine`` (its position moves only when the block succeeds)."""
        return engine.following(self.positions)

    # ---- full reconcile ----------------------------------------------------------------------------------------
    def reconcile(self, snap: Snapshot) -> Dict[str, int]:
        """Make the engine hold exactly one vector, from the snapshot's model, per gallery row (start-up and model
        activation; afterwards the change log keeps it so). Rows and vectors are read in chunks; ids travel as
        int64 arrays. A shared engine that other replicas keep already is only brought up to date."""
        engine = snap.engine
        engine.prepare()
        if engine.kept_by_replicas(self.positions):
            self.sync(snap)
            if engine.count() == self._row_count():
                return dict(removed=0, embedded=0)
        with self.write_lock, self.position(engine):
            with self.Session() as s:
                seq = crud.last_change_seq(session=s)  # before the scan: later changes are replayed by sync()
                db_ids = crud.image_id_array(session=s)
                other_model = crud.ids_not_embedded_by(session=s, model_id=snap.model_id)
            indexed = engine.ids()
            stray = np.setdiff1d(indexed, db_ids, assume_unique=True)
            self.match_rows.clear()
            if snap.gallery_visibility is not None:
                snap.gallery_visibility.clear()
            with self._cache_lock:
                self.cache_cursor = LogCursor(seq)
            if len(stray):
                engine.remove(stray)
            missing = np.union1d(np.setdiff1d(db_ids, indexed, assume_unique=True),
                                 np.intersect1d(other_model, db_ids, assume_unique=True))
            done: List[int] = []
            engine.reserve(len(indexed) - len(stray) + len(missing))
            for start in range(0, len(missing), RECONCILE_CHUNK):  # bounded memory: ~40 MB of vectors a chunk
                done += self.fill_ids(snap, missing[start:start + RECONCILE_CHUNK])
            for start in range(0, len(done), crud.IN_CHUNK):
                with self.Session.begin() as s:
                    crud.set_model_version(session=s, image_ids=done[start:start + crud.IN_CHUNK],
                                           model_id=snap.model_id)
            engine.applied_seq, engine.awaited = seq, {}
        if len(stray) or len(missing):
            _logger.info('reconciled: removed %d stray vectors, added %d', len(stray), len(done))
        return dict(removed=len(stray), embedded=len(done))

    def fill_ids(self, snap: Snapshot, ids, target: Optional[VectorEngine] = None) -> List[int]:
        with self.Session() as s:
            records = crud.gallery_records(session=s, image_ids=ids)
        return self.feed.fill(snap, [records[int(i)] for i in ids if int(i) in records], target, bulk=True)

    def start_at(self, engine: VectorEngine, seq: int) -> None:
        """After a build from the whole gallery as of ``seq``: follow the log from there."""
        engine.start_at(self.positions, seq)

    def _row_count(self) -> int:
        with self.Session() as s:
            return crud.count_images(session=s)

    # ---- following the log -------------------------------------------------------------------------------------
    def sync(self, snap: Optional[Snapshot]) -> int:
        """Apply the gallery changes logged since the engine last looked (by this process or another replica):
        each touched image's vector is upserted if its row exists, removed if not. Returns how many were touched.

        Sequence numbers can become visible out of order (concurrent writers on PostgreSQL): a skipped number is
        re-asked for until it appears or ``sync_gap_seconds`` pass (a rolled-back transaction leaves a hole)."""
        if snap is None:
            return 0
        engine = snap.engine
        touched: List[int] = []
        with self.write_lock, self.position(engine):
            now = time.monotonic()
            cursor = LogCursor(engine.applied_seq, engine.awaited)
            with self.Session() as s:
                changes = crud.changes_after(session=s, seq=cursor.seq, also=sorted(cursor.awaited))
                touched = sorted({image_id for _, image_id, _ in changes})
                rows = crud.gallery_records(session=s, image_ids=touched) if touched else {}
            gone = [i for i in touched if i not in rows]
            if gone:
                engine.remove(gone)
            if rows:
                self.feed.fill(snap, [rows[i] for i in touched if i in rows])
            # the position moves only once the changes are in the engine (a failure above: applied again)
            cursor.advance([seq for seq, _, _ in changes], now, self.sync_gap_seconds)
            engine.applied_seq, engine.awaited = cursor.seq, cursor.awaited
        self.follow_caches(snap)
        return len(touched)

    def follow_caches(self, snap: Snapshot) -> None:
        """Forget what this replica's caches hold of rows the log touched since they last looked (added or deleted:
        the database says which, from now on), whichever replica applied the changes to the engine."""
        with self._cache_lock:
            cursor = self.cache_cursor
            with self.Session() as s:
                changes = crud.changes_after(session=s, seq=cursor.seq, also=sorted(cursor.awaited))
            touched = sorted({image_id for _, image_id, _ in changes})
            if touched:
                self.match_rows.forget(touched)
                if snap.gallery_visibility is not None:
                    snap.gallery_visibility.forget(touched)
            cursor.advance([seq for seq, _, _ in changes], time.monotonic(), self.sync_gap_seconds)

    def note_behind(self, snap: Snapshot) -> None:
        """How many changes wait for the engine (it cannot be reached: the rest of the last check stands)."""
        with self.Session() as s:
            last = crud.last_change_seq(session=s)
        previous = self.health or Health(snap.model_id, False, 0, 0, snap.engine.applied_seq, time.time())
        self.health = replace(previous, behind=max(0, last - snap.engine.applied_seq), checked_at=time.time())

    def check_health(self, snap: Snapshot, compare_ids: bool = False) -> Health:
        """Compare the engine with the gallery (the maintenance loop, after a sync): as many vectors as rows once
        the whole log is applied, and with ``compare_ids`` (now and then: it reads every id) the same ids. The
        result is what /readyz answers until the next check; while changes wait (another replica's, just
        committed) the last verdict stands."""
        if compare_ids:  # every id (millions, from a remote engine): read outside the write lock, trusted below
            applied = snap.engine.applied_seq  # only if the log did not move from here on
            with self.Session() as s:
                logged, db_ids = crud.last_change_seq(session=s), crud.image_id_array(session=s)
            engine_ids = snap.engine.ids()
        with self.write_lock:  # this replica's writes and index swaps wait: rows and vectors are counted alike
            with self.Session() as s:
                last, rows = crud.last_change_seq(session=s), crud.count_images(session=s)
            count = snap.engine.count()
            behind = max(0, last - snap.engine.applied_seq)
            previous = self.health
            if previous is not None and previous.model_id != snap.model_id:
                previous = None
            ids_differ, ids_checked_at = (False, 0.0) if previous is None else (previous.ids_differ,
                                                                                 previous.ids_checked_at)
            if compare_ids and applied == logged == last:  # else the log moved meanwhile: tried again later
                ids_differ, ids_checked_at = not np.array_equal(engine_ids, db_ids), time.monotonic()
            same = count == rows and not ids_differ
            consistent = same if behind == 0 or previous is None else previous.consistent
            health = Health(model_id=snap.model_id, consistent=consistent, gallery_vectors=count, behind=behind,
                            applied_seq=snap.engine.applied_seq, checked_at=time.time(), ids_differ=ids_differ,
                            ids_checked_at=ids_checked_at)
            # the model swap holds this lock too: a check of the model just swapped out is not kept
            if snap is self.current() or self.current() is None:
                self.health = health
                self.metrics.gallery_size.set(count)
        return health
