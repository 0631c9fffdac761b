"""Which vector engine holds a model's gallery vectors (``AMG_VECTOR_ENGINE``), opened from the settings."""
from pathlib import Path
from typing import List

from storage.engine import VectorEngine
from storage.faiss_engine import FaissEngine

from .settings import Settings

__all__ = ['open_engine', 'index_path', 'remove_from_other_models']


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


def remove_from_other_models(engine: VectorEngine, index_dir: Path, model_id: int, ids) -> List[str]:
    """An erasure's vectors gone from every model, not only the active one: the shared engine's other collections,
    and this replica's saved FAISS indexes of other models (removed whole: activating a model again rebuilds its
    index from the database's vectors). The stores touched."""
    touched = engine.remove_from_other_models(ids)
    own = index_path(index_dir, model_id)
    for path in sorted(index_dir.glob('index-model*.faiss')):
        if path != own:
            for stale in (path, path.with_name(path.name + '.attrs.npz')):
                stale.unlink(missing_ok=True)
            touched.append(path.name)
    return touched
