"""What one request uses: the active model and the engine of its vectors (swapped together on activation)."""
from dataclasses import dataclass

from models.embedder import Embedder
from storage.engine import VectorEngine

__all__ = ['Snapshot', 'NoModel']


class NoModel(RuntimeError):
    """No model is active yet."""


@dataclass(frozen=True)
class Snapshot:
    """A model and the engine of its vectors, swapped together on activation."""
    embedder: Embedder
    engine: VectorEngine
    model_id: int
    model_name: str
    min_score: float
