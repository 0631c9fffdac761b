"""(Re)building a model's vector engine in the background, from the vectors in the database: a FAISS index of another
kind on the side (then swapped in), or a new Milvus collection at a model switch."""
import logging
import threading
from typing import TYPE_CHECKING, Callable, List, Optional

import numpy as np

from storage import crud
from storage.index import MIN_TRAIN, IndexKind

from .settings import Settings
from .snapshot import Snapshot
from .tasks import BackgroundTask
from .vector_feed import VectorFeed

if TYPE_CHECKING:
    from .changelog import ChangeLogFollower

__all__ = ['IndexBuilder']

_logger = logging.getLogger(__name__)


class IndexBuilder:
    def __init__(self, session_factory: Callable, settings: Settings, feed: VectorFeed,
                 changelog: 'ChangeLogFollower', write_lock: threading.RLock) -> None:
        self.Session = session_factory
        self.settings = settings
        self.feed = feed
        self.changelog = changelog
        self.write_lock = write_lock
        self.progress = BackgroundTask()  # the background rebuild (activations report their own)

    def wanted_kind(self, n: int) -> IndexKind:
        settings = self.settings
        kind = settings.index_kind
        if kind == 'auto':
            kind = IndexKind.APPROX if n >= settings.approx_threshold else IndexKind.EXACT
        return IndexKind(kind) if n >= MIN_TRAIN else IndexKind.EXACT

    def build(self, snap: Snapshot, kind: Optional[IndexKind] = None, chunk: int = 10_000,
              progress: Optional[BackgroundTask] = None) -> None:
        """(Re)build the snapshot's engine from the whole gallery, read in chunks. FAISS: as index ``kind``
        (default: what the settings want for its size), trained on a sample, filled on the side, then swapped in;
        searches keep using the old contents until the swap. Milvus: filled in place (a new collection at a model
        switch; Milvus builds its index itself). Then caught up with the change log; uploads are not blocked."""
        engine = snap.engine
        with self.Session() as s:
            seq = crud.last_change_seq(session=s)
            ids = crud.image_id_array(session=s)

        def sample() -> np.ndarray:  # vectors to train a new index on, where its kind needs training
            picked = np.sort(np.random.default_rng(0).choice(
                ids, size=min(len(ids), self.settings.index_train_size), replace=False))
            return self.feed.vectors_for(snap, self._records(picked), bulk=True)[1]
        target = engine.build_target(kind or self.wanted_kind(len(ids)), sample, len(ids))
        for start in range(0, len(ids), chunk):
            self.changelog.fill_ids(snap, ids[start:start + chunk], target)
            if progress is not None:
                progress.done = min(len(ids), start + chunk)
        with self.write_lock:
            engine.take(target)
            self.changelog.start_at(engine, seq)
            self.changelog.sync(snap)  # what changed while the new contents were filled

    def _records(self, ids) -> List:
        with self.Session() as s:
            rows = crud.gallery_records(session=s, image_ids=ids)
        return [rows[int(i)] for i in ids if int(i) in rows]

    def maybe_rebuild(self, snap: Snapshot) -> None:
        """Start a background rebuild when the FAISS index is not of the kind the settings want for its size."""
        if snap.engine.needs_rebuild(self.wanted_kind(snap.engine.count())):
            try:
                self.rebuild(snap)
            except RuntimeError:  # one is running already
                pass

    def rebuild(self, snap: Snapshot, kind: Optional[IndexKind] = None) -> None:
        """Rebuild ``snap``'s index in the background (``kind``: default from the settings)."""
        if self.progress.running:
            raise RuntimeError('an index build is running already')
        self.progress.start(kind=str(kind or 'auto'), model_id=snap.model_id, total=snap.engine.count())

        def run() -> None:
            try:
                self.build(snap, kind, progress=self.progress)
                self.progress.finish(kind=snap.engine.kind, done=snap.engine.count())
                _logger.info('index rebuilt as %s (%d vectors)', snap.engine.kind, snap.engine.count())
            except Exception as e:  # reported through the API; the old index keeps serving
                _logger.exception('index rebuild failed')
                self.progress.fail(str(e))
        threading.Thread(target=run, name='index-build', daemon=True).start()
