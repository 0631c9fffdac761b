"""Vectors of gallery rows by a model, and putting them into a vector engine: stored vectors are read from the
database, the others embedded from the stored images on the model thread and stored (so no other replica or restart
embeds them again). Shared by the change-log follower, the index builder and the gallery writer."""
import logging
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from models.imaging import open_image
from storage import crud
from storage.crud import GalleryRecord
from storage.engine import Attributes, VectorEngine
from storage.images import ImageStore

from .batching import ModelThread
from .metrics import Metrics
from .snapshot import Snapshot, gallery_form

__all__ = ['VectorFeed']

_logger = logging.getLogger(__name__)


# Crops embedded for the gallery go through the model thread this many at a time (a bulk fill: a batch at a time);
# a search queued behind them waits for one piece. Two at a time keep a search's p99 beside a writer within 1.5x
# (docs/benchmarks.md 10). (tests/app/test_crash.py's Milvus Lite run failed with it: the test's own pymilvus
# connection, refused by the Lite server's gRPC "too_many_pings" after minutes of clients, not the service.)
STORAGE_PIECE = 2


def _as_stored(vectors: np.ndarray) -> np.ndarray:
    """Vectors as the database keeps them (float16), so every index holds the same numbers."""
    return np.asarray(vectors, dtype=np.float16).astype(np.float32)


class VectorFeed:
    def __init__(self, session_factory: Callable, images: ImageStore, model_thread: ModelThread,
                 metrics: Metrics) -> None:
        self.Session = session_factory
        self.images = images
        self.model_thread = model_thread
        self.metrics = metrics

    def embed_for_storage(self, snap: Snapshot, images: Sequence, bulk: bool = False) -> np.ndarray:
        """The vectors of ``images`` the snapshot's engine holds (app.snapshot.index_encoder) as the database keeps
        them (float16 values), so every index holds the same numbers. Searches go between its pieces
        (:data:`STORAGE_PIECE` images; ``bulk``: a batch)."""
        piece = max(1, snap.embedder.batch_size) if bulk else STORAGE_PIECE
        parts = []
        for i in range(0, len(images), piece):
            self.metrics.embed_batch.observe(min(piece, len(images) - i))
            parts.append(self.model_thread.call(snap.encode, list(images[i:i + piece])))
        vectors = np.concatenate(parts) if parts else np.zeros((0, snap.embedder.dim), np.float32)
        return _as_stored(gallery_form(snap.embedder, vectors))

    def vectors_for(self, snap: Snapshot, rows: Sequence[GalleryRecord],
                    bulk: bool = False) -> Tuple[List[int], np.ndarray]:
        """Vectors of ``rows`` by the snapshot's model: stored ones from the database, the others embedded from
        their images and stored (so no other replica or restart embeds them again). Unreadable images are logged
        and left out."""
        with self.Session() as s:
            stored = crud.get_vectors(session=s, model_id=snap.model_id, image_ids=[r.id for r in rows])
        if stored:  # rows stored before the gallery's form existed (plain scaled crops) are put in it here
            keys = list(stored)
            stored = dict(zip(keys, gallery_form(snap.embedder, np.stack([stored[i] for i in keys]))))
        todo = [r for r in rows if r.id not in stored]
        bs = max(1, snap.embedder.batch_size)
        for start in range(0, len(todo), bs):
            chunk, pics = [], []
            for row in todo[start:start + bs]:
                try:
                    pics.append(open_image(self.images.resolve(row.image_path)))
                    chunk.append(row.id)
                except (OSError, ValueError) as e:
                    _logger.error('gallery image %d cannot be embedded (%s): left without a vector', row.id, e)
            if chunk:
                xb = self.embed_for_storage(snap, pics, bulk)
                with self.Session.begin() as s:
                    if crud.get_model(session=s, model_id=snap.model_id) is not None:
                        present = set(crud.get_images(session=s, image_ids=chunk))
                        keep = [j for j, i in enumerate(chunk) if i in present]  # rows deleted meanwhile: skip
                        crud.put_vectors(session=s, model_id=snap.model_id, image_ids=[chunk[j] for j in keep],
                                         vectors=xb[keep])
                stored.update(zip(chunk, xb))
        ids = [r.id for r in rows if r.id in stored]
        vectors = np.stack([stored[i] for i in ids]) if ids else np.zeros((0, snap.embedder.dim), np.float32)
        return ids, vectors

    def fill(self, snap: Snapshot, rows: Sequence[GalleryRecord], target: Optional[VectorEngine] = None,
             bulk: bool = False) -> List[int]:
        """Put the vectors and attributes of ``rows`` into ``target`` (default: the snapshot's engine); the ids put.
        ``bulk``: a whole gallery's (embedded a batch at a time)."""
        ids, vectors = self.vectors_for(snap, rows, bulk)
        if ids:
            by_id = {r.id: r for r in rows}
            attributes = Attributes.of_rows([by_id[i] for i in ids])
            # in this thread: engines take their own locks (a FAISS write waits for a save, searches do not)
            (target or snap.engine).upsert(np.asarray(ids), vectors, attributes)
        return ids
