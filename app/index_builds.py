"""(Re)building the active model's index in the background, from the vectors in the database."""
import logging
import threading
from typing import TYPE_CHECKING, List, Optional

import numpy as np

from storage import crud
from storage.db import GalleryImage
from storage.index import MIN_TRAIN, IndexKind

from .tasks import BackgroundTask

if TYPE_CHECKING:
    from .state import ServiceState, Snapshot

__all__ = ['IndexBuilder']

_logger = logging.getLogger(__name__)


class IndexBuilder:
    def __init__(self, service: 'ServiceState') -> None:
        self.service = service
        self.progress = BackgroundTask()  # the background rebuild (activations report their own)

    def wanted_kind(self, n: int) -> IndexKind:
        settings = self.service.settings
        kind = settings.index_kind
        if kind == 'auto':
            kind = IndexKind.APPROX if n >= settings.approx_threshold else IndexKind.EXACT
        return IndexKind(kind) if n >= MIN_TRAIN else IndexKind.EXACT

    def build(self, snap: 'Snapshot', kind: Optional[IndexKind] = None, chunk: int = 10_000,
              progress: Optional[BackgroundTask] = None) -> None:
        """(Re)build the snapshot's index from the whole gallery as ``kind`` (default: what the settings want for
        its size): trained on a sample, filled by chunks on the side, then swapped in and caught up with the change
        log. Searches keep using the old contents until the swap; uploads are not blocked."""
        service = self.service
        with service.Session() as s:
            seq = crud.last_change_seq(session=s)
            ids = crud.all_image_ids(session=s)
        kind = kind or self.wanted_kind(len(ids))
        sample = []
        if kind != IndexKind.EXACT and len(ids) >= MIN_TRAIN:
            picked = np.random.default_rng(0).choice(ids, size=min(len(ids), service.settings.index_train_size),
                                                     replace=False)
            sample = service.vectors_for(snap, self._rows(picked))[1]
        fresh = snap.index.trained_like(kind, sample if len(sample) else np.zeros((0, snap.index.dim)), len(ids))
        for start in range(0, len(ids), chunk):
            got, vectors = service.vectors_for(snap, self._rows(ids[start:start + chunk]))
            if got:
                fresh.add(np.asarray(got), vectors)
            if progress is not None:
                progress.done = min(len(ids), start + chunk)
        with service.write_lock:
            snap.index.swap(fresh)
            snap.index.applied_seq, snap.index.awaited = seq, {}
            service.changelog.sync(snap)  # what changed while the new index was filled

    def _rows(self, ids) -> List[GalleryImage]:
        with self.service.Session() as s:
            rows = crud.get_images(session=s, image_ids=[int(i) for i in ids])
        return [rows[int(i)] for i in ids if int(i) in rows]

    def maybe_rebuild(self, snap: 'Snapshot') -> None:
        """Start a background rebuild when the index is not of the kind the settings want for its size."""
        if snap.index.kind != self.wanted_kind(snap.index.ntotal):
            try:
                self.rebuild(snap)
            except RuntimeError:  # one is running already
                pass

    def rebuild(self, snap: 'Snapshot', kind: Optional[IndexKind] = None) -> None:
        """Rebuild ``snap``'s index in the background (``kind``: default from the settings)."""
        if self.progress.running:
            raise RuntimeError('an index build is running already')
        self.progress.start(kind=str(kind or 'auto'), model_id=snap.model_id, total=snap.index.ntotal)

        def run() -> None:
            try:
                self.build(snap, kind, progress=self.progress)
                self.progress.finish(kind=str(snap.index.kind), done=snap.index.ntotal)
                _logger.info('index rebuilt as %s (%d vectors)', snap.index.kind, snap.index.ntotal)
            except Exception as e:  # reported through the API; the old index keeps serving
                _logger.exception('index rebuild failed')
                self.progress.fail(str(e))
        threading.Thread(target=run, name='index-build', daemon=True).start()
