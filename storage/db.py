"""Gallery metadata, models and jobs in SQL (SQLAlchemy 2; SQLite by default, any SQLAlchemy URL works)."""
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Dict, List, Optional

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, SmallInteger, String,
                        Text, create_engine, event, text)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

__all__ = ['Base', 'ApiKey', 'AuditEvent', 'Identity', 'Sighting', 'GalleryImage', 'GalleryTag', 'GalleryVector', 'GalleryChange', 'EnginePosition',
           'ModelVersion', 'Job', 'JobKind', 'JobState', 'ACTIVE_JOB_STATES', 'TAG_CHARS', 'SITE_CHARS', 'make_engine',
           'make_sessionmaker', 'utcnow']

TAG_CHARS = 64  # longest tag
SITE_CHARS = 64  # longest site name


class JobKind(StrEnum):
    TRAIN = 'train'
    PRUNE = 'prune'
    FINETUNE = 'finetune'  # a prune run that removes nothing
    INGEST = 'ingest'  # a camera's video in, its tracks stored as sightings (app.ingest)
    ADAPT = 'adapt'  # a model adapted to the gallery's or a folder's unlabelled crops (app.adaptation)


class JobState(StrEnum):
    QUEUED = 'queued'
    RUNNING = 'running'
    CANCELLING = 'cancelling'
    SUCCEEDED = 'succeeded'
    FAILED = 'failed'
    CANCELLED = 'cancelled'
    INTERRUPTED = 'interrupted'  # the service stopped while it ran


ACTIVE_JOB_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {Dict[str, Any]: JSON, List[str]: JSON, List[float]: JSON}


class ModelVersion(Base):
    """A checkpoint the service can embed with; exactly one is active."""
    __tablename__ = 'model_versions'
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(256), default='')
    sha256: Mapped[str] = mapped_column(String(64), default='')
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    min_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    info: Mapped[Dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GalleryTag(Base):
    """One tag of one gallery image: tags are rows, so listing and counting by tag are indexed queries."""
    __tablename__ = 'gallery_tags'
    __table_args__ = (Index('ix_gallery_tags_tag_image', 'tag', 'image_id'),)
    image_id: Mapped[int] = mapped_column(ForeignKey('gallery_images.id', ondelete='CASCADE'), primary_key=True)
    tag: Mapped[str] = mapped_column(String(TAG_CHARS), primary_key=True)
    position: Mapped[int] = mapped_column(SmallInteger, default=0)  # the order the uploader gave


class Identity(Base):
    """One person as the service found them across cameras: the sightings linked to each other (app.identities).
    Named by an operator, it is enrolled."""
    __tablename__ = 'identities'
    __table_args__ = {'sqlite_autoincrement': True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    site: Mapped[str] = mapped_column(String(SITE_CHARS), default='', server_default='', index=True)


# video sightings not linked to an identity yet, in time order (app.identities): a partial index, so that finding
# none does not walk the uploaded crops' sightings (all unlinked, for good)
PENDING_SIGHTINGS = "identity_id IS NULL AND video <> ''"


class Sighting(Base):
    """One person seen once by one camera: a track of a video (its crops, best first), or a single uploaded crop
    (a sighting of one). The gallery's unit: searches can answer one hit per sighting."""
    __tablename__ = 'sightings'
    __table_args__ = (Index('ix_sightings_pending', 'first_time', 'id', sqlite_where=text(PENDING_SIGHTINGS),
                            postgresql_where=text(PENDING_SIGHTINGS)),
                      {'sqlite_autoincrement': True})  # ids are never reused, as the images' are
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera_id: Mapped[int] = mapped_column(Integer, index=True, default=0)
    first_time: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True, index=True)
    last_time: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True, index=True)
    video: Mapped[str] = mapped_column(String(512), default='')  # the source recording's name ('' for uploads)
    track_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # the tracker's id within the video
    crop_count: Mapped[int] = mapped_column(Integer, default=0)  # its gallery images
    frame_count: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # frames the track spans (video)
    # not a foreign key: images and sightings would reference each other, and every delete would have to break the
    # cycle first; crud keeps it pointing at one of the sighting's images
    best_image_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    quality: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # the best crop's, 0..1
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the person the service takes it for (None: a video track not linked yet, or an uploaded crop)
    identity_id: Mapped[Optional[int]] = mapped_column(ForeignKey('identities.id'), nullable=True, index=True)
    site: Mapped[str] = mapped_column(String(SITE_CHARS), default='', server_default='', index=True)
    # the video ingest job that stored it (its recording and every tracked box: the frame viewer); not a foreign
    # key: a sighting outlives the job's row (None: an upload, or stored before migration 0011)
    ingest_job_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True, index=True)


class GalleryImage(Base):
    __tablename__ = 'gallery_images'
    # retention finds expired rows by when they were stored, overall and per camera (migration 0007)
    __table_args__ = (Index('ix_gallery_images_created_at', 'created_at'),
                      Index('ix_gallery_images_camera_created', 'camera_id', 'created_at'),
                      {'sqlite_autoincrement': True})  # ids are never reused (migration 0004)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[Optional[int]] = mapped_column(Integer, index=True, nullable=True)  # None: unknown
    sighting_id: Mapped[Optional[int]] = mapped_column(ForeignKey('sightings.id'), nullable=True, index=True)
    frame: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # frame number in the sighting's video
    box: Mapped[Optional[List[float]]] = mapped_column(JSON, nullable=True)  # [x, y, w, h] in the frame, pixels
    camera_id: Mapped[int] = mapped_column(Integer, index=True, default=0)
    timestamp: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True, index=True)
    tag_rows: Mapped[List[GalleryTag]] = relationship(lazy='selectin', cascade='all, delete-orphan',
                                                      order_by=GalleryTag.position)
    source_name: Mapped[str] = mapped_column(String(512), default='')
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_path: Mapped[str] = mapped_column(String(1024))
    model_version: Mapped[Optional[int]] = mapped_column(ForeignKey('model_versions.id'), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the site (shop, building) whose camera took it; '' without sites (AMG_SITES). Keys scoped to sites see theirs
    site: Mapped[str] = mapped_column(String(SITE_CHARS), default='', server_default='', index=True)

    @property
    def tags(self) -> List[str]:
        return [t.tag for t in self.tag_rows]

    @tags.setter
    def tags(self, values: Optional[List[str]]) -> None:
        self.tag_rows = [GalleryTag(tag=t, position=i) for i, t in enumerate(dict.fromkeys(values or ()))]


class GalleryVector(Base):
    """An image's embedding by one model, float16 bytes. Indexes are built from these: a replica, a restart or a
    rebuild never re-embeds what some process already embedded."""
    __tablename__ = 'gallery_vectors'
    image_id: Mapped[int] = mapped_column(ForeignKey('gallery_images.id'), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey('model_versions.id'), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class GalleryChange(Base):
    """Append-only log of gallery additions and deletions, written in the same transaction as the change itself.
    Every replica's index follows it (``seq`` > the last one it applied)."""
    __tablename__ = 'gallery_changes'
    __table_args__ = {'sqlite_autoincrement': True}  # seqs are never reused
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(8))  # 'add' | 'delete'
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EnginePosition(Base):
    """How far a shared vector engine (one Milvus collection, used by every replica) has applied the gallery change
    log: replicas take turns applying it, and each continues where the last one stopped."""
    __tablename__ = 'engine_positions'
    collection: Mapped[str] = mapped_column(String(255), primary_key=True)
    applied_seq: Mapped[int] = mapped_column(Integer, default=0)
    awaited: Mapped[Dict[str, Any]] = mapped_column(default=dict)  # seq -> seconds since the epoch it was first missed
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Job(Base):
    """A background prune / fine-tune / train job; state survives restarts."""
    __tablename__ = 'jobs'
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), default=JobState.QUEUED.value, index=True)
    params: Mapped[Dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    current: Mapped[Dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[Dict[str, Any]] = mapped_column(default=dict)
    log: Mapped[str] = mapped_column(Text, default='')
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    result_model_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """One request as the audit trail keeps it: who (key name and role, client address), what (method, route,
    path, filters, k), and how it went (status, results); never an image. Append-only: the database refuses an
    UPDATE (a trigger, migration 0008); rows leave only by the audit retention."""
    __tablename__ = 'audit_events'
    __table_args__ = {'sqlite_autoincrement': True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    key_name: Mapped[str] = mapped_column(String(100), default='', index=True)  # '' for an open route without a key
    role: Mapped[str] = mapped_column(String(16), default='')  # read|write|admin|open; revoked|expired: refused
    client: Mapped[str] = mapped_column(String(64), default='')
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(200), index=True)  # the route's template: /v1/gallery/{image_id}
    path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[int] = mapped_column(Integer)
    filters: Mapped[Dict[str, Any]] = mapped_column(default=dict)
    k: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    results: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # matches or rows answered


class ApiKey(Base):
    """A named API key made through the admin API: its role (read, write, admin) and the sites it may see (empty:
    every site). Only the secret's SHA-256 is stored (the secret is random: a fast hash is as safe as a slow one);
    revoked keys stay, so the audit trail's names keep meaning something."""
    __tablename__ = 'api_keys'
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    sites: Mapped[List[str]] = mapped_column(default=list)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)


def make_engine(url: str) -> Engine:
    """An engine on a database at the latest schema revision (``storage.migrate``); SQLite gets WAL and a busy
    timeout (API and job worker share the file)."""
    kwargs: Dict[str, Any] = {}
    if url.startswith('sqlite'):
        kwargs['connect_args'] = {'check_same_thread': False, 'timeout': 30}
    engine = create_engine(url, **kwargs)
    if url.startswith('sqlite'):
        @event.listens_for(engine, 'connect')
        def _sqlite_pragmas(conn, _record):  # noqa: ANN001
            cur = conn.cursor()
            cur.execute('PRAGMA journal_mode=WAL')
            cur.execute('PRAGMA synchronous=FULL')  # an acknowledged upload survives power loss
            cur.close()
    from .migrate import upgrade  # the migrations import the tables from this module
    upgrade(engine)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
