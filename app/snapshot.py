"""What one request uses: the active model and the engine of its vectors (swapped together on activation)."""
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from models.runtime import Backend, ImageEmbedder, open_exported
from reid.matching import ScoreCalibration, scale_parts
from storage.engine import VectorEngine

from .row_cache import RowCache
from .settings import Settings

__all__ = ['Snapshot', 'NoModel', 'open_embedder', 'index_encoder']


class NoModel(RuntimeError):
    """No model is active yet."""


@dataclass(frozen=True)
class Snapshot:
    """A model and the engine of its vectors, swapped together on activation."""
    embedder: ImageEmbedder
    engine: VectorEngine
    model_id: int
    model_name: str
    min_score: float  # on the answers' score scale: a probability when ``scores`` calibrates them, else a cosine
    scores: Optional[ScoreCalibration] = None  # cosine -> P(same person), from the checkpoint; None: cosines
    gallery_visibility: Optional[RowCache] = None  # a model with the visibility head: its gallery's, by image id
    # images -> the vectors the engine holds (on the model thread): one object per snapshot, so that concurrent
    # searches of one model share a forward pass (app.batching merges requests of the same function)
    encode: Callable[[Sequence], np.ndarray] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.encode is None:
            object.__setattr__(self, 'encode', index_encoder(self.embedder))

    @property
    def visible_parts(self) -> bool:
        """Searches score on the parts both images show (the model has the visibility head)."""
        return self.embedder.has_visibility

    def score(self, cosine):
        """The answers' score of a cosine similarity."""
        return cosine if self.scores is None else self.scores(cosine)


def index_encoder(embedder: ImageEmbedder) -> Callable[[Sequence], np.ndarray]:
    """Images -> the vectors an engine holds of them: the embeddings; with the visibility head, each part scaled by
    its visibility (reid.matching.scale_parts: inner products are then the mutually-visible-part score's
    numerator), from the same forward pass."""
    if not embedder.has_visibility:
        return embedder
    parts = embedder.num_parts

    def encode(images: Sequence) -> np.ndarray:
        return scale_parts(*embedder.embed_with_visibility(images), parts)
    return encode


def open_embedder(path: str, settings: Settings) -> ImageEmbedder:
    """The checkpoint at ``path`` as ``AMG_BACKEND`` serves it. A fresh export runs without torch (models.runtime);
    torch is imported only when the export is missing or unusable (warned) or the torch backend is asked for."""
    exported = open_exported(path, settings.backend, threads=settings.onnx_threads, prefer_int8=settings.int8,
                             onnx_spin=settings.onnx_spin, ov_precision=settings.ov_precision,
                             batch_size=settings.embed_batch_size)
    if exported is not None:
        return exported
    from models.embedder import Embedder
    return Embedder(path, device=settings.device, batch_size=settings.embed_batch_size, backend=Backend.TORCH)
