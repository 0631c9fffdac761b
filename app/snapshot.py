"""What one request uses: the active model and the engine of its vectors (swapped together on activation)."""
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from models.runtime import Backend, ImageEmbedder, open_exported
from reid.matching import ScoreCalibration, as_gallery, scale_parts
from storage.engine import VectorEngine

from .row_cache import RowCache
from .settings import Settings

__all__ = ['Snapshot', 'Scoring', 'NoModel', 'open_embedder', 'index_encoder', 'gallery_form']


class NoModel(RuntimeError):
    """No model is active yet."""


@dataclass(frozen=True)
class Scoring:
    """How answers score a similarity: ``kind`` ('probability' or 'cosine'), the default threshold on that scale,
    and the map from the similarity (None: the similarity itself)."""
    kind: str
    min_score: float
    calibration: Optional[ScoreCalibration] = None

    def __call__(self, similarity):
        return similarity if self.calibration is None else self.calibration(similarity)


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
    plain_min_score: float = 0.5  # a cosine threshold for a score no threshold was fitted on (settings' default)
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

    def scoring(self, visible_parts: bool = True) -> Scoring:
        """The answers' scores: the model's calibration and threshold where they were fitted on this similarity
        (the served one: on the mutually visible parts, with the visibility head); plain part cosines of such a
        model (``visible_parts=False``) were fitted on nothing and are answered as cosines."""
        if self.visible_parts and not visible_parts:
            return Scoring('cosine', self.plain_min_score)
        return Scoring('cosine' if self.scores is None else 'probability', self.min_score, self.scores)


def gallery_form(embedder: ImageEmbedder, vectors: np.ndarray) -> np.ndarray:
    """Encoded crops (:func:`index_encoder`) as the gallery stores them (reid.matching.as_gallery for a model with
    the visibility head; the embeddings themselves otherwise)."""
    return as_gallery(vectors, embedder.num_parts) if embedder.has_visibility else vectors


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


def open_embedder(path: str, settings: Settings, checkpoint_sha256: Optional[str] = None) -> ImageEmbedder:
    """The checkpoint at ``path`` as ``AMG_BACKEND`` serves it. A fresh export runs without torch (models.runtime);
    torch is imported only when the export is missing or unusable (warned) or the torch backend is asked for.
    ``checkpoint_sha256``: the model row's hash (the checkpoint is then not hashed again)."""
    exported = open_exported(path, settings.backend, threads=settings.onnx_threads, prefer_int8=settings.int8,
                             onnx_spin=settings.onnx_spin, ov_precision=settings.ov_precision,
                             batch_size=settings.embed_batch_size, checkpoint_sha256=checkpoint_sha256)
    if exported is not None:
        return exported
    from models.embedder import Embedder
    return Embedder(path, device=settings.device, batch_size=settings.embed_batch_size, backend=Backend.TORCH)
