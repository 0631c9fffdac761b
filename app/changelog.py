"""Keeping an index equal to the gallery: a full reconcile (start-up, activation) and, after it, following the
gallery change log that every replica writes."""
import logging
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from storage import crud
from storage.index import VectorIndex

if TYPE_CHECKING:
    from .state import ServiceState, Snapshot

__all__ = ['ChangeLogFollower']

_logger = logging.getLogger(__name__)
# rows read, vectorised and indexed at a time by a full reconcile: a start over 100,000 rows in one piece peaked at
# 2.56 GB RSS, in pieces 2.16 GB (by hand: ServiceState.startup alone on a padded gallery; the index is 0.6 GB)
RECONCILE_CHUNK = 5000


class ChangeLogFollower:
    def __init__(self, service: 'ServiceState') -> None:
        self.service = service

    def reconcile(self, snap: 'Snapshot') -> Dict[str, int]:
        """Make the index hold exactly one vector, from the snapshot's model, per gallery row (full scan: at
        start-up and model activation; afterwards the change log keeps it so)."""
        service = self.service
        with service.write_lock:
            with service.Session() as s:
                seq = crud.last_change_seq(session=s)  # before the scan: later changes are replayed by sync()
                db_ids = set(crud.all_image_ids(session=s))
                stray = [int(i) for i in snap.index.ids() if int(i) not in db_ids]
                service.match_rows.clear()
                service.on_model_thread(snap.index.remove, stray)
                missing = crud.images_needing_vectors(session=s, indexed_ids=snap.index.ids(),
                                                      model_id=snap.model_id)
            done: List[int] = []
            for start in range(0, len(missing), RECONCILE_CHUNK):  # bounded memory: ~40 MB of vectors a chunk
                done += service.fill(snap, missing[start:start + RECONCILE_CHUNK])
            with service.Session.begin() as s:
                crud.set_model_version(session=s, image_ids=done, model_id=snap.model_id)
            snap.index.applied_seq, snap.index.awaited = seq, {}
        if stray or missing:
            _logger.info('reconciled: removed %d stray vectors, added %d', len(stray), len(done))
        return dict(removed=len(stray), embedded=len(done))

    def sync(self, snap: Optional['Snapshot']) -> int:
        """Apply the gallery changes logged since the index last looked (by this process or another replica):
        each touched image's vector is added if its row exists, removed if not. Returns how many were touched.

        Sequence numbers can become visible out of order (concurrent writers on PostgreSQL): a skipped number is
        re-asked for until it appears or ``sync_gap_seconds`` pass (a rolled-back transaction leaves a hole)."""
        if snap is None:
            return 0
        service = self.service
        with service.write_lock:
            index = snap.index
            now = time.monotonic()
            with service.Session() as s:
                changes = crud.changes_after(session=s, seq=index.applied_seq, also=sorted(index.awaited))
                if not changes:
                    self._expire_gaps(index, now)
                    return 0
                expected = index.applied_seq + 1
                for seq, _, _ in changes:
                    index.awaited.pop(seq, None)
                    if seq >= expected:
                        for hole in range(expected, seq):
                            index.awaited.setdefault(hole, now)
                        expected = seq + 1
                index.applied_seq = max(index.applied_seq, expected - 1)
                touched = sorted({image_id for _, image_id, _ in changes})
                service.match_rows.forget(touched)  # added or deleted: the database says which, from now on
                rows = crud.get_images(session=s, image_ids=touched)
            gone = [i for i in touched if i not in rows]
            if gone:
                service.on_model_thread(index.remove, gone)
            service.fill(snap, [rows[i] for i in touched if i in rows])
            self._expire_gaps(index, now)
            if snap is service.current:
                service.metrics.gallery_size.set(index.ntotal)
        return len(touched)

    def _expire_gaps(self, index: VectorIndex, now: float) -> None:
        for hole, since in list(index.awaited.items()):
            if now - since > self.service.settings.sync_gap_seconds:
                del index.awaited[hole]

    def consistent(self, snap: 'Snapshot') -> bool:
        """Cheap check for /readyz: after catching up with the change log, as many vectors as gallery rows."""
        self.sync(snap)
        with self.service.Session() as s:
            return crud.count_images(session=s) == snap.index.ntotal
