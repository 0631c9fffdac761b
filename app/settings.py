"""Service settings from environment variables (prefix ``AMG_``) or a ``.env`` file."""
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.embedder import Backend
from storage.index import IndexKind

__all__ = ['Settings']


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix='AMG_', env_file='.env', env_ignore_empty=True, extra='ignore')

    data_dir: Path = Field(Path('amg-data'), description='images, FAISS index, SQLite database, job outputs')
    database_url: Optional[str] = Field(None, description='SQLAlchemy URL; default sqlite:///DATA_DIR/amg.db')
    model_path: Optional[Path] = Field(None, description='checkpoint to serve; registered and activated at start')
    api_key: Optional[str] = Field(None, description='admin API key (header X-API-Key); admin is off without it')
    device: str = 'cpu'
    backend: Backend = Field(
        Backend.AUTO, description='auto: ONNX Runtime when CHECKPOINT.onnx is fresh, else eager torch')
    onnx_threads: Optional[int] = Field(None, ge=1, description='ONNX Runtime threads (default: all cores)')
    sample_queries_dir: Optional[Path] = Field(None, description='a folder of query images named like Market-1501 '
                                               '(PID_cCAM...): the web page offers them as one-click samples')
    sample_queries: int = Field(16, ge=1, le=200, description='how many samples the page shows')
    embed_batch_size: int = Field(32, ge=1, le=1024)
    batch_wait_ms: float = Field(5.0, ge=0, le=1000,
                                 description='under concurrency, queries wait up to this long to share a forward pass; '
                                             '0: every query alone')
    index_kind: Union[IndexKind, Literal['auto']] = Field(
        IndexKind.EXACT, description='exact (flat); approx (IVF, full vectors); compressed (PCA + IVF + float16 codes: '
                             'million-image galleries of LA-Base vectors); auto: IVF above approx_threshold')
    approx_threshold: int = Field(200_000, ge=1000)
    pca_dim: int = Field(256, ge=8, description='compressed index: dimensions kept by the PCA')
    index_train_size: int = Field(100_000, ge=1000, description='vectors sampled to train an IVF/PCA index')
    nprobe: int = Field(16, ge=1)
    index_save_seconds: float = Field(10.0, gt=0, description='how often a changed index is written to disk')
    index_dir: Optional[Path] = Field(None, description="this replica's FAISS index files (default: data_dir)")
    sync_seconds: float = Field(1.0, gt=0, description='how often the index follows the gallery change log and '
                                                         'the active model (changes made by other replicas)')
    sync_gap_seconds: float = Field(60.0, gt=0, description='how long a missing change sequence number is '
                                                             'awaited (concurrent writers commit out of order)')
    default_k: int = Field(10, ge=1, le=100)
    default_min_score: float = Field(0.5, description="used when the model has no calibrated threshold")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description='per image')
    max_request_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(25_000_000, ge=1024, description='width x height limit (decompression bombs)')
    max_files_per_request: int = Field(256, ge=1)
    job_workers: int = Field(1, ge=1, description='background job processes at once')
    job_nice: int = Field(10, ge=0, le=19, description='nice of job processes where SCHED_IDLE is unavailable '
                                                       '(Linux runs them under SCHED_IDLE): queries come first')

    @model_validator(mode='after')
    def _default_database(self) -> 'Settings':
        if self.database_url is None:
            self.database_url = f'sqlite:///{(self.data_dir / "amg.db").resolve()}'
        return self
