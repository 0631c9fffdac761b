"""Keeping a vector engine equal to the gallery: a full reconcile (start-up, activation) and, after it, following the
gallery change log that every replica writes.

An embedded engine (FAISS) is this replica's own: its position in the log lives in memory. A shared engine (one
Milvus collection for all replicas) has one position, kept in the database (``engine_positions``); replicas take
turns under a lock every replica honours, each continuing where the last stopped. Applying a change looks at the
row as it is now (present: upsert its vector; gone: delete), so applying it twice, or late, does no harm.
"""
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
from sqlalchemy.engine import Engine

from storage import crud
from storage.engine import VectorEngine
from storage.locks import lock_key, replica_lock

from .metrics import Metrics
from .row_cache import MatchRows
from .snapshot import Snapshot
from .vector_feed import VectorFeed

__all__ = ['ChangeLogFollower']

_logger = logging.getLogger(__name__)
# rows read, vectorised and indexed at a time by a full reconcile: a start over 100,000 rows in one piece peaked at
# 2.56 GB RSS, in pieces 2.16 GB (by hand: ServiceState.startup alone on a padded gallery; the index is 0.6 GB)
RECONCILE_CHUNK = 5000


class ChangeLogFollower:
    def __init__(self, session_factory: Callable, database: Engine, lock_dir: Path, write_lock: threading.RLock,
                 feed: VectorFeed, match_rows: MatchRows, sync_gap_seconds: float, metrics: Metrics,
                 current: Callable[[], Optional[Snapshot]]) -> None:
        self.Session = session_factory
        self.database = database  # replicas' locks (PostgreSQL advisory locks)
        self.lock_dir = lock_dir  # otherwise lock files here
        self.write_lock = write_lock  # uploads, deletes, the model swap
        self.feed = feed
        self.match_rows = match_rows
        self.sync_gap_seconds = sync_gap_seconds
        self.metrics = metrics
        self.current = current

    # ---- the log position --------------------------------------------------------------------------------------
    @contextmanager
    def position(self, engine: VectorEngine) -> Iterator[None]:
        """Around applying changes: a shared engine's position is read from the database under the replicas' lock
        and written back when the block succeeds (a failure leaves it, to be applied again)."""
        if not engine.shared:
            yield
            return
        name = engine.position_key
        lock_file = self.lock_dir / f'.engine-{name}.lock'
        with replica_lock([lock_key(f'engine:{name}')], lock_file, self.database):
            with self.Session() as s:
                seq, awaited = crud.get_engine_position(session=s, collection=name)
            wall, mono = time.time(), time.monotonic()
            engine.applied_seq, engine.awaited = seq, {k: mono - (wall - v) for k, v in awaited.items()}
            yield
            wall, mono = time.time(), time.monotonic()
            with self.Session.begin() as s:
                crud.put_engine_position(session=s, collection=name, applied_seq=engine.applied_seq,
                                         awaited={k: wall - (mono - v) for k, v in engine.awaited.items()})

    def shared_position_exists(self, engine: VectorEngine) -> bool:
        with self.Session() as s:
            return crud.get_engine_position(session=s, collection=engine.position_key) != (0, {})

    # ---- full reconcile ----------------------------------------------------------------------------------------
    def reconcile(self, snap: Snapshot) -> Dict[str, int]:
        """Make the engine hold exactly one vector, from the snapshot's model, per gallery row (start-up and model
        activation; afterwards the change log keeps it so). Rows and vectors are read in chunks; ids travel as
        int64 arrays. A shared engine that other replicas keep already is only brought up to date."""
        engine = snap.engine
        if engine.shared:
            engine.create()
            if self.shared_position_exists(engine):
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
            if len(stray):
                self.feed.engine_call(snap, engine.remove, stray)
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
        return self.feed.fill(snap, [records[int(i)] for i in ids if int(i) in records], target)

    def start_at(self, engine: VectorEngine, seq: int) -> None:
        """After a build from the whole gallery as of ``seq``: follow the log from there."""
        if engine.shared:
            with self.Session.begin() as s:
                crud.put_engine_position(session=s, collection=engine.position_key, applied_seq=seq, awaited={})
        engine.applied_seq, engine.awaited = seq, {}

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
        with self.write_lock, self.position(engine):
            now = time.monotonic()
            with self.Session() as s:
                changes = crud.changes_after(session=s, seq=engine.applied_seq, also=sorted(engine.awaited))
                if not changes:
                    self._expire_gaps(engine, now)
                    return 0
                touched = sorted({image_id for _, image_id, _ in changes})
                rows = crud.gallery_records(session=s, image_ids=touched)
            gone = [i for i in touched if i not in rows]
            if gone:
                self.feed.engine_call(snap, engine.remove, gone)
            self.feed.fill(snap, [rows[i] for i in touched if i in rows])
            self.match_rows.forget(touched)  # added or deleted: the database says which, from now on
            if snap.gallery_visibility is not None:
                snap.gallery_visibility.forget(touched)
            # the position moves only once the changes are in the engine (a failure above: applied again)
            expected = engine.applied_seq + 1
            for seq, _, _ in changes:
                engine.awaited.pop(seq, None)
                if seq >= expected:
                    for hole in range(expected, seq):
                        engine.awaited.setdefault(hole, now)
                    expected = seq + 1
            engine.applied_seq = max(engine.applied_seq, expected - 1)
            self._expire_gaps(engine, now)
            if snap is self.current() and not engine.shared:  # a shared engine's count is a round trip: /metrics
                self.metrics.gallery_size.set(engine.count())
        return len(touched)

    def _expire_gaps(self, engine: VectorEngine, now: float) -> None:
        for hole, since in list(engine.awaited.items()):
            if now - since > self.sync_gap_seconds:
                del engine.awaited[hole]

    def behind(self, snap: Snapshot) -> int:
        """Changes logged that the engine has not applied (for /readyz)."""
        with self.Session() as s:
            last = crud.last_change_seq(session=s)
            if snap.engine.shared:
                applied = crud.get_engine_position(session=s, collection=snap.engine.position_key)[0]
            else:
                applied = snap.engine.applied_seq
        return max(0, last - applied)

    def consistent(self, snap: Snapshot) -> Tuple[bool, int]:
        """Cheap check for /readyz: after catching up with the change log, as many vectors as gallery rows?
        (and the vector count)."""
        self.sync(snap)
        count = snap.engine.count()
        return self._row_count() == count, count
