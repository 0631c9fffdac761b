"""Which vector engine holds a model's gallery vectors (``AMG_VECTOR_ENGINE``), opened from the settings."""
from pathlib import Path

from storage.engine import VectorEngine
from storage.faiss_engine import FaissEngine

from .settings import Settings

__all__ = ['open_engine', 'index_path']


def index_path(index_dir: Path, model_id: int) -> Path:
    """This replica's FAISS index file of a model."""
    return index_dir / f'index-model{model_id}.faiss'


def open_engine(settings: Settings, index_dir: Path, model_id: int, dim: int) -> VectorEngine:
    """The engine of ``model_id``'s vectors: FAISS loads this replica's saved index (if any); Milvus names the
    model's collection (app.changelog prepares it: Milvus may be down now)."""
    if settings.vector_engine == 'milvus':
        from storage.milvus_engine import MilvusEngine, collection_name
        prefix = settings.milvus_collection_prefix
        return MilvusEngine(settings.milvus_uri, collection_name(prefix, model_id), dim,
                            token=settings.milvus_token or '', index_type=settings.milvus_index_type,
                            index_params=settings.milvus_index_params, search_params=settings.milvus_search_params,
                            alias=f'{prefix}_active', prefix=prefix, timeout=settings.milvus_timeout,
                            consistency=settings.milvus_consistency)
    return FaissEngine.load(index_path(index_dir, model_id), dim, settings.nprobe, settings.pca_dim)
