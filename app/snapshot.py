"""What one request uses: the active model and the engine of its vectors (swapped together on activation)."""
from dataclasses import dataclass
from typing import Optional

from models.runtime import Backend, ImageEmbedder, open_exported
from reid.matching import ScoreCalibration
from storage.engine import VectorEngine

from .settings import Settings

__all__ = ['Snapshot', 'NoModel', 'open_embedder']


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

    def score(self, cosine):
        """The answers' score of a cosine similarity."""
        return cosine if self.scores is None else self.scores(cosine)


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
