"""Retention: gallery images are removed a set number of days after they were stored (``AMG_RETENTION_DAYS``, per
camera ``AMG_RETENTION_CAMERA_DAYS``, per site ``AMG_RETENTION_SITE_DAYS``), with everything that is theirs, as a delete removes it
(app.gallery_writes.GalleryWriter.remove: files, every model's vectors, the engines through the change log, the
sightings and identities left empty). Enrolled (named) identities' sightings are spared when
``AMG_RETENTION_KEEP_NAMED`` says so.

The sweeper runs in its own thread, ``AMG_RETENTION_BATCH`` images a transaction, so the write lock is never held
for more than one batch and searches (which never take it) go on; one replica sweeps at a time (a lock every
replica honours), the others find nothing left."""
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from sqlalchemy.engine import Engine

from storage import audit as audit_store
from storage import crud
from storage.db import utcnow
from storage.locks import lock_key, replica_lock

from .gallery_writes import RECEIPT_FIELDS, GalleryWriter
from .metrics import Metrics
from .settings import Settings

__all__ = ['RetentionRule', 'RetentionSweeper', 'rules_of']

_logger = logging.getLogger(__name__)
# after each batch the sweeper rests as long as the batch took (at least this long): it takes at most half a core
# from searches, and an upload waiting for the write lock gets it
BATCH_PAUSE_SECONDS = 0.01


class RetentionRule(NamedTuple):
    """Images stored more than ``days`` ago expire: of these cameras (None: every camera but ``other_than``'s),
    and of these sites (None: every site but ``other_sites_than``')."""
    days: float
    cameras: Optional[Tuple[int, ...]] = None
    other_than: Tuple[int, ...] = ()
    sites: Optional[Tuple[str, ...]] = None
    other_sites_than: Tuple[str, ...] = ()


def rules_of(settings: Settings) -> List[RetentionRule]:
    """The retention rules the settings make: one per overridden camera (it comes first), one per overridden site
    for its other cameras, and the default for the rest."""
    cameras, sites = settings.retention_camera_days, settings.retention_site_days
    rules = [RetentionRule(days, cameras=(camera,)) for camera, days in sorted(cameras.items())]
    rules += [RetentionRule(days, other_than=tuple(sorted(cameras)), sites=(site,))
              for site, days in sorted(sites.items())]
    if settings.retention_days is not None:
        rules.append(RetentionRule(settings.retention_days, other_than=tuple(sorted(cameras)),
                                   other_sites_than=tuple(sorted(sites))))
    return rules


class RetentionSweeper:
    def __init__(self, session_factory: Callable, database: Engine, gallery: GalleryWriter, settings: Settings,
                 metrics: Metrics, lock_dir: Path) -> None:
        self.Session = session_factory
        self.database = database  # replicas' lock (PostgreSQL advisory locks)
        self.gallery = gallery
        self.rules = rules_of(settings)
        self.audit_days = settings.audit_retention_days
        self.keep_named = settings.retention_keep_named
        self.batch = settings.retention_batch
        self.interval = settings.retention_seconds
        self.metrics = metrics
        self.lock_file = lock_dir / '.retention.lock'
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.rules or self.audit_days is not None:
            self._thread = threading.Thread(target=self._loop, name='retention', daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # tried again next round; what was removed stays removed
                _logger.exception('retention sweep failed')

    def sweep(self, now: Optional[datetime] = None) -> Dict[str, int]:
        """Remove every image expired at ``now`` (naive UTC; default: now), a batch at a time; what was removed."""
        now = now or utcnow()
        removed = dict.fromkeys(RECEIPT_FIELDS, 0)
        with replica_lock([lock_key('retention')], self.lock_file, self.database):
            for rule in self.rules:
                cutoff = now - timedelta(days=rule.days)
                while not self._stop.is_set():
                    with self.Session() as s:
                        ids = crud.expired_image_ids(session=s, stored_before=cutoff, limit=self.batch,
                                                     camera_ids=rule.cameras, other_cameras_than=rule.other_than,
                                                     sites=rule.sites, other_sites_than=rule.other_sites_than,
                                                     keep_named=self.keep_named)
                    if not ids:
                        break
                    started = time.monotonic()
                    for what, n in self.gallery.remove(ids).items():
                        removed[what] += n
                        self.metrics.retention_removed.labels(what).inc(n)
                    self._stop.wait(max(BATCH_PAUSE_SECONDS, time.monotonic() - started))
            removed['audit_events'] = self._sweep_audit(now)
        if removed['images'] or removed['audit_events']:
            _logger.info('retention removed %s', ', '.join(f'{n} {what}' for what, n in removed.items()))
        return removed

    def _sweep_audit(self, now: datetime) -> int:
        """The audit trail's own retention: events older than ``audit_retention_days``, a batch at a time."""
        if self.audit_days is None:
            return 0
        cutoff, total = now - timedelta(days=self.audit_days), 0
        while not self._stop.is_set():
            with self.Session.begin() as s:
                n = audit_store.delete_events_before(session=s, cutoff=cutoff, limit=self.batch)
            total += n
            if n < self.batch:
                break
        self.metrics.retention_removed.labels('audit_events').inc(total)
        return total
