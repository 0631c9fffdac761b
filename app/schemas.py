"""API shapes (never the ORM tables)."""
from datetime import datetime, timezone
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ['ERRORS', 'Message', 'GalleryItemPublic', 'GalleryItemsPublic', 'SearchMatch', 'QueryResult', 'SearchResponse',
           'TrainJobParams', 'PruneJobParams', 'FinetuneJobParams', 'JobCreate', 'JobPublic', 'JobsPublic',
           'ModelPublic', 'ModelsPublic']


# the database stores naive UTC; answers carry the offset, as RFC 3339 date-times must
UtcDatetime = Annotated[datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=timezone.utc))]


class Message(BaseModel):
    detail: str


# error answers every route may give, documented in OpenAPI with their shape
ERRORS: Dict[Any, Dict[str, Any]] = {code: {'model': Message, 'description': text} for code, text in {
    400: 'malformed input (the message names the field or file)', 401: 'missing or wrong API key',
    404: 'unknown id', 409: 'conflicts with the current state', 413: 'too large',
    503: 'no model is loaded yet'}.items()}


class GalleryItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    person_id: int
    camera_id: int
    timestamp: Optional[UtcDatetime] = None
    tags: List[str] = []
    source_name: str = ''
    image_sha256: str
    model_version: Optional[int] = None
    created_at: UtcDatetime
    image_url: str = ''
    thumbnail_url: str = ''


class GalleryItemsPublic(BaseModel):
    data: List[GalleryItemPublic]
    count: int


class SearchMatch(BaseModel):
    image_id: int
    score: float
    person_id: int
    camera_id: int
    timestamp: Optional[UtcDatetime] = None
    tags: List[str] = []
    source_name: str = ''
    thumbnail_url: str
    above_threshold: bool


class QueryResult(BaseModel):
    query_index: int
    filename: str
    no_match: bool = Field(description='true when no gallery image scores at least min_score')
    person_id: Optional[int] = Field(None, description='the best match\'s person when it clears min_score')
    best_score: Optional[float] = None
    matches: List[SearchMatch]


class SearchResponse(BaseModel):
    model_id: int
    min_score: float
    k: int
    results: List[QueryResult]


class _JobParams(BaseModel):
    model_config = ConfigDict(extra='forbid')
    data_dir: str = Field(description='dataset folder on the server (Market-1501 or ImageFolder layout)')
    batch_size: int = Field(32, ge=1, le=1024)
    img_size: Optional[Tuple[int, int]] = None
    seed: int = 0


class TrainJobParams(_JobParams):
    model: str = 'amg_vit_tiny_patch16_224'
    weight_path: Optional[str] = None
    epochs: int = Field(30, ge=1, le=1000)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)


class PruneJobParams(_JobParams):
    weight_path: Optional[str] = Field(None, description='default: the active model')
    prune_mode: Literal['attn', 'head_entropy', 'head_attn'] = 'attn'
    prune_rate: float = Field(0.0, ge=0, lt=1)
    head_rate: float = Field(0.0, ge=0, lt=1)
    token_rate: float = Field(0.0, ge=0, lt=1)
    iter_nums: int = Field(1, ge=1, le=1000)
    finetune_nums: int = Field(0, ge=0, le=1000)
    final_finetune: int = Field(10, ge=0, le=1000)
    lr: float = Field(1e-4, gt=0)
    wd: float = Field(1e-3, ge=0)
    distill_type: Literal['none', 'soft', 'hard'] = 'soft'
    distill_alpha: float = Field(0.2, ge=0)
    distill_tau: float = Field(1.0, gt=0)
    score_batches: Optional[int] = Field(None, ge=1)


class FinetuneJobParams(_JobParams):
    weight_path: Optional[str] = Field(None, description='default: the active model')
    final_finetune: int = Field(5, ge=1, le=1000)
    lr: float = Field(1e-4, gt=0)
    wd: float = Field(1e-3, ge=0)
    distill_type: Literal['none', 'soft', 'hard'] = 'soft'
    distill_alpha: float = Field(0.2, ge=0)
    distill_tau: float = Field(1.0, gt=0)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    kind: Literal['train', 'prune', 'finetune']
    params: Dict[str, Any]


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    state: str
    params: Dict[str, Any]
    progress: float
    current: Dict[str, Any]
    metrics: Dict[str, Any]
    log_tail: str = ''
    error: Optional[str] = None
    result_model_id: Optional[int] = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class JobsPublic(BaseModel):
    data: List[JobPublic]
    count: int


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    path: str
    sha256: str
    active: bool
    min_score: Optional[float] = None
    info: Dict[str, Any]
    created_at: UtcDatetime


class ModelsPublic(BaseModel):
    data: List[ModelPublic]
    count: int
    activation: Dict[str, Any]
