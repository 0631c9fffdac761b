"""API shapes (never the ORM tables)."""
from datetime import datetime, timezone
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pruning.config import PruneConfig
from reid.config import AdaptConfig, TrainConfig
from reid.options import job_params_model
from storage.db import JobKind, JobState

from .tasks import TaskState

MAX_ID = 2 ** 31 - 1  # ids and filters fit the database's INTEGER columns (32-bit on PostgreSQL)

__all__ = ['ERRORS', 'Message', 'GalleryItemPublic', 'GalleryItemsPublic', 'SightingPublic', 'SightingsPublic',
           'SightingSummary', 'Removal', 'ErasureReceipt', 'AuditEventPublic', 'AuditEventsPublic', 'KeyCreate', 'KeyPublic', 'KeyCreated',
           'KeysPublic', 'SearchMatch', 'QueryResult', 'SearchResponse',
           'TrainJobParams', 'PruneJobParams', 'FinetuneJobParams', 'JOB_PARAMS', 'JobCreate', 'TrainJobCreate',
           'PruneJobCreate', 'FinetuneJobCreate', 'AdaptJobParams', 'AdaptJobCreate', 'JobPublic', 'JobsPublic',
           'ModelPublic', 'ModelsPublic', 'TaskPublic']


# the database stores naive UTC; answers carry the offset, as RFC 3339 date-times must
UtcDatetime = Annotated[datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=timezone.utc))]


class Message(BaseModel):
    detail: str


# error answers every route may give, documented in OpenAPI with their shape
ERRORS: Dict[Any, Dict[str, Any]] = {code: {'model': Message, 'description': text} for code, text in {
    400: 'malformed input (the message names the field or file)', 401: 'missing or wrong API key',
    404: 'unknown id', 409: 'conflicts with the current state', 413: 'too large',
    503: 'no model is loaded yet, or the vector engine is unavailable'}.items()}


class GalleryItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    person_id: Optional[int] = Field(None, description='null: unknown (an unlabelled detection)')
    camera_id: int
    timestamp: Optional[UtcDatetime] = Field(None, description='when it was taken (a video crop: its frame\'s time)')
    sighting_id: Optional[int] = Field(None, description='the sighting it belongs to (an upload: a sighting of one)')
    frame: Optional[int] = Field(None, description="its frame number in the sighting's video")
    box: Optional[List[float]] = Field(None, description='[x, y, w, h] of the crop in its frame, pixels')
    tags: List[str] = []
    source_name: str = ''
    image_sha256: str
    model_version: Optional[int] = None
    created_at: UtcDatetime
    site: str = Field('', description="its site (AMG_SITES; '' without sites)")
    image_url: str = ''
    thumbnail_url: str = ''


class GalleryItemsPublic(BaseModel):
    data: List[GalleryItemPublic]
    count: int


class SightingSummary(BaseModel):
    """What a result list shows of a sighting."""
    model_config = ConfigDict(from_attributes=True)
    id: int
    camera_id: int
    first_time: Optional[UtcDatetime] = None
    last_time: Optional[UtcDatetime] = None
    video: str = Field('', description="the source recording's name ('' for uploaded crops)")
    track_id: Optional[int] = Field(None, description="the tracker's id within the video")
    crop_count: int = Field(description='its gallery images')
    frame_count: Optional[int] = Field(None, description='frames the track spans')
    best_image_id: Optional[int] = Field(None, description='its best crop')
    quality: Optional[float] = Field(None, description="the best crop's quality, 0-1")
    created_at: UtcDatetime
    identity_id: Optional[int] = Field(None, description='the person the service takes it for (null: an uploaded '
                                                         'crop, or a video track not linked yet)')
    site: str = Field('', description="its site (AMG_SITES; '' without sites)")


class SightingPublic(SightingSummary):
    crops: List[GalleryItemPublic] = Field(description='its gallery images, best first, with frame, time and box')


class TrackedBox(BaseModel):
    track_id: int = Field(description="the tracker's id within the recording")
    x: float
    y: float
    w: float
    h: float
    sighting_id: int = Field(description='the sighting this track became (tracks too short to keep and erased '
                                          'sightings have no box)')


class FrameView(BaseModel):
    """One frame of a sighting's recording and every box tracked in it (pixels, top-left corner and size)."""
    sighting_id: int
    frame: int = Field(description='0-based, as the crops number them')
    first_frame: int = Field(description="the sighting's first frame: frames it spans are served, no others")
    last_frame: int
    width: int
    height: int
    image_url: str = Field(description='the frame as a JPEG')
    boxes: List[TrackedBox]


class SightingsPublic(BaseModel):
    data: List[SightingSummary]
    count: int


class IdentityPublic(BaseModel):
    """A person the service found across cameras (named by an operator: enrolled)."""
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: Optional[str] = Field(None, description='given by an operator (enrolment); null: found by the service')
    sighting_count: int
    first_time: Optional[UtcDatetime] = None
    last_time: Optional[UtcDatetime] = None
    camera_ids: List[int] = Field(description='the cameras that saw them')
    created_at: UtcDatetime
    site: str = Field('', description="its site: its sightings are all of it ('' without sites)")


class IdentityTimeline(IdentityPublic):
    timeline: List[SightingSummary] = Field(description='their sightings across cameras in time order')


class IdentitiesPublic(BaseModel):
    data: List[IdentityPublic]
    count: int


class IdentityUpdate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    name: Optional[str] = Field(description='a name (enrols the identity); null takes it away', max_length=200)


class IdentityMerge(BaseModel):
    model_config = ConfigDict(extra='forbid')
    other_id: int = Field(ge=1, le=MAX_ID, description='the identity whose sightings move into this one (it is '
                                                       'removed)')


class IdentityRecluster(BaseModel):
    model_config = ConfigDict(extra='forbid')
    after: datetime = Field(description='the window: video sightings that overlap [after, before] (ISO 8601)')
    before: datetime
    threshold: Optional[float] = Field(None, ge=-1, le=1, description="the cosine two sightings' pooled crops "
                                                                      "must reach (default: the model's threshold)")


class IdentitySplit(BaseModel):
    model_config = ConfigDict(extra='forbid')
    sighting_ids: List[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=10_000,
                                    description='sightings of this identity that become a new identity')


class Removal(BaseModel):
    """What a removal took away (an erasure's receipt, a retention sweep's counts). Thumbnails are made from the
    image files on request and never stored: they went with the files."""
    images: int = Field(description='gallery rows, with their tags')
    image_files: int = Field(description='image files unlinked (a file two rows shared goes with the last)')
    vectors: int = Field(description="stored vectors of every model (the engines' copies follow the change log)")
    sightings: int = Field(description='sightings left without images')
    identities: int = Field(description='identities left without sightings (or the one erased)')


class ErasureReceipt(Removal):
    erased: str = Field(description="what was erased: 'person 7', 'identity 3'")


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: UtcDatetime
    key_name: str = Field(description="the key's name ('' without a key)")
    role: str = Field(description='read, write, admin; open: a route open without a key')
    client: str
    method: str
    route: str = Field(description="the route's template")
    path: str
    status: int
    filters: Dict[str, Any] = Field(description='query parameters, and a search form\'s fields (never images)')
    k: Optional[int] = None
    results: Optional[int] = Field(None, description='matches or rows answered')


class AuditEventsPublic(BaseModel):
    data: List[AuditEventPublic]
    count: int


def _not_an_environment_name(name: str) -> str:
    if name[:4].upper() == 'AMG_':  # the audit trail names the environment keys so: no key may pose as one
        raise ValueError("a key's name may not start with AMG_ (the environment keys' names)")
    return name


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    name: Annotated[str, AfterValidator(_not_an_environment_name)] = Field(
        min_length=1, max_length=100, pattern=r'^[^\x00-\x1f\x7f]+$',
        description="unique; the audit trail names the key by it (not AMG_...: the environment keys' names)")
    role: Literal['read', 'write', 'admin'] = Field(description='read: searches and reads; write: also uploads and '
                                                               'deletes; admin: also the admin API')
    sites: List[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=100, description='the sites (AMG_SITES) it may see; none: every site')
    expires_at: Optional[datetime] = Field(None, description='refused from then on (ISO 8601; none: never)')


class KeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    role: str
    sites: List[str]
    created_at: UtcDatetime
    expires_at: Optional[UtcDatetime] = None
    revoked_at: Optional[UtcDatetime] = None


class KeyCreated(KeyPublic):
    key: str = Field(description='the secret, for the X-API-Key header: shown this once, only its hash is kept')


class KeysPublic(BaseModel):
    data: List[KeyPublic]
    count: int


class SearchMatch(BaseModel):
    image_id: int
    score: float = Field(description="the probability that it is the same person, calibrated on the model's "
                                     'held-out training identities (models without a calibration: the cosine)')
    cosine: float = Field(description='the raw cosine similarity of the embeddings')
    person_id: Optional[int] = Field(None, description='null: unknown')
    camera_id: int
    timestamp: Optional[UtcDatetime] = None
    tags: List[str] = []
    source_name: str = ''
    thumbnail_url: str
    above_threshold: bool
    sighting_id: Optional[int] = None
    sighting: Optional[SightingSummary] = Field(None, description='group_by=sighting: the sighting this crop (its '
                                                'best-matching one) stands for')


class QueryResult(BaseModel):
    query_index: int
    filename: str
    no_match: bool = Field(description='true when no gallery image scores at least min_score')
    person_id: Optional[int] = Field(None, description='the best match\'s person when it clears min_score')
    best_score: Optional[float] = None
    matches: List[SearchMatch]
    visibility: Optional[List[float]] = Field(None, description='a model with the visibility head: how much of '
                                              "each LA part (a band of rows, top first) the query shows, 0-1; the "
                                              "matches' scores average the part cosines weighted by what both images "
                                              'show (null: plain matching)')


class SearchResponse(BaseModel):
    model_id: int
    score_kind: Literal['probability', 'cosine'] = Field(description="what the matches' score is")
    min_score: float
    k: int
    results: List[QueryResult]


_ACTIVE_MODEL = (Optional[str], Field(None, description='checkpoint to start from (default: the active model)'))
# the prune options that a fine-tune job (a prune run that removes nothing) does not take
_PRUNING_ONLY = ('prune_mode', 'prune_rate', 'head_rate', 'token_rate', 'iter_nums', 'finetune_nums', 'token_mode',
                 'drop_blocks', 'fuse_token', 'score_batches')
TrainJobParams = job_params_model(TrainConfig, 'TrainJobParams')
PruneJobParams = job_params_model(PruneConfig, 'PruneJobParams', replace={'weight_path': _ACTIVE_MODEL})
FinetuneJobParams = job_params_model(PruneConfig, 'FinetuneJobParams', drop=_PRUNING_ONLY,
                                     replace={'weight_path': _ACTIVE_MODEL,
                                              'final_finetune': (int, Field(5, ge=1, le=1000))})
AdaptJobParams = job_params_model(AdaptConfig, 'AdaptJobParams', replace={'weight_path': _ACTIVE_MODEL})
JOB_PARAMS = {JobKind.TRAIN: TrainJobParams, JobKind.PRUNE: PruneJobParams, JobKind.FINETUNE: FinetuneJobParams,
              JobKind.ADAPT: AdaptJobParams}


_PARAMS_DOC = "the options of the CLI command of the same name (train, prune, adapt), except the server's own: output " \
              "paths and device"


class TrainJobCreate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    kind: Literal['train']
    params: TrainJobParams = Field(description=_PARAMS_DOC)


class PruneJobCreate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    kind: Literal['prune']
    params: PruneJobParams = Field(description=_PARAMS_DOC)


class FinetuneJobCreate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    kind: Literal['finetune']
    params: FinetuneJobParams = Field(description=_PARAMS_DOC + ' (a prune run that removes nothing)')


class AdaptJobCreate(BaseModel):
    model_config = ConfigDict(extra='forbid')
    kind: Literal['adapt']
    params: AdaptJobParams = Field(description=_PARAMS_DOC + ' (without data_dir: the gallery\'s crops, its video '
                                               'sightings as tracks)')


# one body per kind, told apart by "kind": the OpenAPI document shows every job option of every kind
JobCreate = Annotated[Union[TrainJobCreate, PruneJobCreate, FinetuneJobCreate, AdaptJobCreate],
                      Field(discriminator='kind')]


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: JobKind
    state: JobState
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


class TaskPublic(BaseModel):
    """A background task's progress (a model activation, an index build)."""
    model_config = ConfigDict(from_attributes=True)
    state: TaskState
    kind: Optional[str] = Field(None, description='index kind (index builds)')
    model_id: Optional[int] = None
    done: int = Field(0, description='gallery vectors done')
    total: int = 0
    error: Optional[str] = None


class ModelsPublic(BaseModel):
    data: List[ModelPublic]
    count: int
    activation: TaskPublic
