"""Service settings from environment variables (prefix ``AMG_``) or a ``.env`` file."""
import re
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.runtime import Backend
from models.onnx_backend import Spin
from storage.index import IndexKind

__all__ = ['Settings', 'SITE_PATTERN']

SITE_PATTERN = r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}'


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix='AMG_', env_file='.env', env_ignore_empty=True, extra='ignore')

    data_dir: Path = Field(Path('amg-data'), description='images, FAISS index, SQLite database, job outputs')
    database_url: Optional[str] = Field(None, description='SQLAlchemy URL; default sqlite:///DATA_DIR/amg.db')
    model_path: Optional[Path] = Field(None, description='checkpoint to serve; registered and activated at start')
    api_key: Optional[str] = Field(None, description='admin API key (header X-API-Key); without it the admin API '
                                                     'answers 401')
    read_api_key: Optional[str] = Field(None, description='when set, searches and gallery reads need this key (or the '
                                                          'write or admin key); open by default')
    write_api_key: Optional[str] = Field(None, description='when set, gallery uploads and deletes need this key (or '
                                                           'the admin key); open by default (then writes need what '
                                                           'reads need)')
    data_roots: str = Field('', description='comma-separated folders that admin jobs may read datasets (data_dir) '
                                            'and weights (weight_path, teacher_path) from; the page suggests the first '
                                            '(default: data_dir)')
    cors_origins: str = Field('', description='comma-separated web origins allowed to call the API from a browser '
                                              '(CORS, and writes with their Origin); none by default')
    device: str = Field('cpu', description='torch device of the model (eager torch backend): cpu, cuda, cuda:1, ...')
    backend: Backend = Field(
        Backend.AUTO, description='auto: when CHECKPOINT.onnx is fresh, OpenVINO (if installed) or ONNX Runtime, else '
                                  'eager torch; torch: eager PyTorch; onnx: CHECKPOINT.onnx on ONNX Runtime; '
                                  'onnx-int8: CHECKPOINT.int8.onnx (amg-reid export --int8); openvino: '
                                  "OpenVINO's CPU plugin on CHECKPOINT.onnx; openvino-int8: CHECKPOINT.int8.xml "
                                  '(NNCF INT8, amg-reid export --int8 where nncf is installed)')
    int8: bool = Field(False, description="with backend auto: an INT8 export first (OpenVINO's, then ONNX "
                                          "Runtime's), when a fresh one exists")
    onnx_threads: Optional[int] = Field(None, ge=1, description='ONNX Runtime or OpenVINO threads (default: all cores)')
    ov_precision: Literal['auto', 'bf16', 'fp32'] = Field(
        'auto', description="OpenVINO's inference precision: auto (bf16 where the CPU runs it natively: AMX or "
                            'AVX-512 BF16; else fp32; an INT8 model: fp32 outside its INT8 layers), bf16, fp32')
    onnx_spin: Spin = Field(Spin.RUN, description="when ONNX Runtime's threads busy-wait: run (during a forward "
                                                  "only), always (between forwards too: they then slow the index "
                                                  "search), off; 1/0 mean always/off")
    sample_queries_dir: Optional[Path] = Field(None, description='a folder of query images named like Market-1501 '
                                               '(PID_cCAM...): the web page offers them as one-click samples')
    sample_queries: int = Field(16, ge=1, le=200, description='how many samples the page shows')
    embed_batch_size: int = Field(32, ge=1, le=1024, description='images per forward pass')
    batch_wait_ms: float = Field(5.0, ge=0, le=1000,
                                 description='under concurrency, queries wait up to this long to share a forward pass; '
                                             '0: every query alone')
    index_kind: Union[IndexKind, Literal['auto']] = Field(
        IndexKind.EXACT, description='exact (flat); approx (IVF, full vectors); compressed (PCA + IVF + float16 codes: '
                             'million-image galleries of LA-Base vectors); auto: IVF above approx_threshold')
    approx_threshold: int = Field(200_000, ge=1000, description='index_kind auto: gallery vectors above which the '
                                                                'index is IVF (approx)')
    pca_dim: int = Field(256, ge=8, description='compressed index: dimensions kept by the PCA')
    index_train_size: int = Field(100_000, ge=1000, description='vectors sampled to train an IVF/PCA index')
    nprobe: int = Field(16, ge=1, description='IVF lists searched (approx, compressed); a filtered search probes '
                                              'nprobe / selectivity lists')
    vector_engine: Literal['faiss', 'milvus'] = Field(
        'faiss', description='where gallery vectors live and filters run: faiss (embedded, in every replica\'s memory) '
                             'or milvus (a shared Milvus server or Milvus Lite: AMG_MILVUS_URI)')
    milvus_uri: Optional[str] = Field(None, description='http://host:19530 (Milvus standalone or cluster), or a local '
                                                        'path ending in .db (Milvus Lite, this process only)')
    milvus_token: Optional[str] = Field(None, description='Milvus credentials ("user:password" or an API key)')
    milvus_collection_prefix: str = Field('amg', pattern=r'^[A-Za-z_][A-Za-z0-9_]{0,60}$',
                                          description='collections are PREFIX_modelN; the alias PREFIX_active '
                                                      'names the active one')
    milvus_index_type: str = Field('HNSW', description='the Milvus vector index: HNSW, IVF_FLAT, FLAT, AUTOINDEX, '
                                                       '... (what your Milvus supports)')
    milvus_index_params: Dict[str, Any] = Field(default_factory=lambda: {'M': 16, 'efConstruction': 200},
                                                description='JSON, e.g. {"M": 16, "efConstruction": 200} (HNSW) '
                                                            'or {"nlist": 4096} (IVF_FLAT)')
    milvus_search_params: Dict[str, Any] = Field(default_factory=lambda: {'ef': 128},
                                                 description='JSON, e.g. {"ef": 128} (HNSW; >= k) or {"nprobe": 32}')
    milvus_timeout: float = Field(10.0, gt=0, description='seconds a Milvus call may take')
    milvus_consistency: Literal['Strong', 'Session', 'Bounded', 'Eventually'] = Field(
        'Session', description="Milvus searches' consistency level: Session sees this replica's writes at once; "
                               'Strong waits for every write (~230 ms a search on Milvus 2.3)')
    index_save_seconds: float = Field(10.0, gt=0, description='how often a changed index is written to disk')
    index_dir: Optional[Path] = Field(None, description="this replica's FAISS index files and their attribute "
                                                        "columns, *.attrs.npz (default: data_dir)")
    sync_seconds: float = Field(1.0, gt=0, description='how often the index follows the gallery change log and '
                                                         'the active model (changes made by other replicas)')
    sync_gap_seconds: float = Field(60.0, gt=0, description='how long a missing change sequence number is '
                                                             'awaited (concurrent writers commit out of order)')
    default_k: int = Field(10, ge=1, le=100, description='matches per query when a search gives no k')
    default_min_score: float = Field(0.5, description='the no-match threshold when the model has no calibrated one, '
                                                      'and for plain-cosine searches (visibility=false)')
    # request limits, sized for person crops (a few hundred pixels a side, tens of kB): docs/configuration.md
    max_upload_bytes: int = Field(4 * 1024 * 1024, ge=1024, description='bytes per image file: 413 past it')
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024,
                                   description='bytes per request body, counted as it streams in (chunked '
                                               'included): 413 past it')
    max_pixels: int = Field(4_000_000, ge=1024, description='width x height of one image as decoded (large JPEGs '
                                                            'decode at 1/2-1/8 scale): decompression bombs')
    max_request_pixels: int = Field(16_000_000, ge=1024, description='decoded pixels of all images of one request '
                                                                     'together, checked before any is decoded')
    max_files_per_request: int = Field(64, ge=1, le=1000, description='image files per request')
    max_video_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description='one video upload (POST /v1/videos); '
                                 'longer recordings: an admin ingest job on a path under AMG_DATA_ROOTS')
    decode_threads: int = Field(2, ge=1, le=64, description='requests decoding images at once in worker threads '
                                                            '(the others wait, off the event loop; a search of at '
                                                            'most 256x256 pixels and 64 kB decodes in the event loop)')
    orphan_grace_seconds: float = Field(3600.0, ge=0, description='at start, image files no row names (and '
                                        'temporaries) older than this are removed: left by a crash between a '
                                        'write and its commit')
    sites: str = Field('', description='comma-separated site names (shops, buildings: letters, digits, _ . -); '
                                       'every upload and recording then belongs to one, and a key scoped to sites '
                                       'sees only theirs; none: one gallery, no sites')
    retention_days: Optional[float] = Field(None, gt=0, description='gallery images are removed this many days '
                                            'after they were stored, with their files, vectors, emptied sightings and '
                                            'identities (docs/privacy.md); none: kept until deleted')
    retention_camera_days: Dict[int, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description='JSON, per camera id: its own retention in days, e.g. {"3": 7}, which '
                                          'overrides retention_days (also where that is unset)')
    retention_site_days: Dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description='JSON, per site: its own retention in days, e.g. {"shop-a": 14}, which '
                                          'overrides retention_days (a camera\'s own retention comes first)')
    retention_keep_named: bool = Field(False, description='retention spares the sightings of enrolled (named) '
                                                          'identities')
    audit_retention_days: Optional[float] = Field(None, gt=0, description='audit events (GET /v1/admin/audit) are '
                                                  'removed this many days after they were recorded; none: kept')
    retention_seconds: float = Field(60.0, gt=0, description='how often the retention sweeper looks for expired '
                                                             'images')
    retention_batch: int = Field(500, ge=1, le=1_000, description='images the sweeper removes a transaction (the '
                                                                   'write lock is held for one batch; at most '
                                                                   "1,000: each takes one of PostgreSQL's locks)")
    min_travel_seconds: Optional[float] = Field(None, gt=0, description='the least time a person takes between two '
                                                'of your cameras: video sightings on two cameras closer in time '
                                                'than this are never one identity (linking, re-clustering, '
                                                'merges); none: only one camera\'s overlaps are ruled out')
    job_workers: int = Field(1, ge=1, description='background job processes at once')
    job_nice: int = Field(10, ge=0, le=19, description='nice of job processes where SCHED_IDLE is unavailable '
                                                       '(Linux runs them under SCHED_IDLE): queries come first')

    @property
    def site_list(self) -> List[str]:
        return [s.strip() for s in self.sites.split(',') if s.strip()]

    @property
    def cors_origin_list(self) -> List[str]:
        return [o.strip().rstrip('/') for o in self.cors_origins.split(',') if o.strip()]

    @property
    def data_root_list(self) -> List[Path]:
        roots = [r.strip() for r in self.data_roots.split(',') if r.strip()] or [str(self.data_dir)]
        return [Path(r).expanduser().resolve() for r in roots]

    @field_validator('onnx_spin', mode='before')
    @classmethod
    def _spin(cls, value):
        return Spin.parse(value)

    @model_validator(mode='after')
    def _default_database(self) -> 'Settings':
        if self.database_url is None:
            self.database_url = f'sqlite:///{(self.data_dir / "amg.db").resolve()}'
        bad = [s for s in self.site_list + list(self.retention_site_days) if not re.fullmatch(SITE_PATTERN, s)]
        if bad:
            raise ValueError(f'sites: {bad[0]!r} is not a site name (letters, digits, _ . -; at most 64)')
        if self.site_list and not self.read_api_key:
            raise ValueError('sites: AMG_SITES needs AMG_READ_API_KEY (open reads would see every site)')
        unknown = sorted(set(self.retention_site_days) - set(self.site_list))
        if unknown:
            raise ValueError(f'retention_site_days: {unknown[0]!r} is not one of AMG_SITES')
        if self.vector_engine == 'milvus' and not self.milvus_uri:
            raise ValueError('AMG_VECTOR_ENGINE=milvus needs AMG_MILVUS_URI (http://host:19530, or a .db path for '
                             'Milvus Lite)')
        return self
