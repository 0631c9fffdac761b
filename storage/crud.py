"""SQL access as keyword-only functions taking a session (API schemas live in app/, tables in storage.db)."""
from datetime import datetime
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from .db import (ACTIVE_JOB_STATES, EnginePosition, GalleryChange, GalleryImage, GalleryTag, GalleryVector, Identity,
                 Job, JobState, ModelVersion, Sighting, utcnow)

__all__ = ['add_images', 'add_sighting', 'get_sighting', 'get_sightings', 'list_sightings', 'sighting_image_ids',
           'sighting_images', 'count_sighting',
           'get_image', 'get_images', 'gallery_records', 'GalleryRecord', 'list_images',
           'delete_image', 'delete_images', 'Deletion', 'delete_empty_identities', 'person_image_ids',
           'identity_image_ids', 'expired_image_ids', 'image_id_array',
           'ids_not_embedded_by', 'referenced_contents', 'count_images',
           'put_vectors', 'get_vectors', 'last_change_seq', 'changes_after', 'set_model_version', 'add_model',
           'get_model', 'list_models', 'active_model', 'activate_model', 'create_job', 'get_job', 'list_jobs',
           'update_job', 'interrupt_running_jobs', 'get_engine_position', 'put_engine_position']


# ---- gallery ----------------------------------------------------------------------------------------------------
def add_images(*, session: Session, rows: Sequence[Dict[str, Any]], vectors: Optional[np.ndarray] = None,
               model_id: Optional[int] = None) -> List[GalleryImage]:
    """New gallery rows (with their vectors by ``model_id`` when given), logged as changes for the indexes. A row
    without a ``sighting_id`` is a sighting of one (its camera, its timestamp as the time range), made here."""
    images = [GalleryImage(**row) for row in rows]
    alone = [image for image in images if image.sighting_id is None]
    sightings = [Sighting(camera_id=image.camera_id or 0, first_time=image.timestamp, last_time=image.timestamp,
                          crop_count=1, site=image.site or '') for image in alone]
    session.add_all(sightings)
    session.flush()
    for image, sighting in zip(alone, sightings):
        image.sighting_id = sighting.id
    session.add_all(images)
    session.flush()
    for image, sighting in zip(alone, sightings):
        sighting.best_image_id = image.id
    if vectors is not None:
        put_vectors(session=session, model_id=model_id, image_ids=[i.id for i in images], vectors=vectors)
    session.add_all([GalleryChange(image_id=i.id, op='add') for i in images])
    return images


def get_image(*, session: Session, image_id: int) -> Optional[GalleryImage]:
    return session.get(GalleryImage, image_id)


def get_images(*, session: Session, image_ids: Sequence[int]) -> Dict[int, GalleryImage]:
    """Rows by id in one query (missing ids are simply absent)."""
    ids = [int(i) for i in image_ids]
    if not ids:
        return {}
    return {r.id: r for r in session.scalars(select(GalleryImage).where(GalleryImage.id.in_(ids)))}


class GalleryRecord(NamedTuple):
    """A gallery row as searches show it and vector engines filter on it (no ORM object: read by the thousand)."""
    id: int
    person_id: int
    camera_id: int
    timestamp: Optional[datetime]
    tags: List[str]
    source_name: str
    image_path: str
    sighting_id: Optional[int] = None
    site: str = ''


_RECORD_COLUMNS = (GalleryImage.id, GalleryImage.person_id, GalleryImage.camera_id, GalleryImage.timestamp,
                   GalleryImage.source_name, GalleryImage.image_path, GalleryImage.sighting_id, GalleryImage.site)
# built once: constructing a statement cost more than running it (~0.1 ms of ~0.25 per search)
_RECORDS = select(*_RECORD_COLUMNS).where(GalleryImage.id.in_(bindparam('ids', expanding=True)))
_TAGS = (select(GalleryTag.image_id, GalleryTag.tag).where(GalleryTag.image_id.in_(bindparam('ids', expanding=True)))
         .order_by(GalleryTag.image_id, GalleryTag.position))
IN_CHUNK = 10_000  # bounded IN lists


def gallery_records(*, session: Session, image_ids: Sequence[int]) -> Dict[int, GalleryRecord]:
    """Records by id, two column queries per 10,000 ids (rows, then their tags); missing ids are absent."""
    ids = [int(i) for i in image_ids]
    out: Dict[int, GalleryRecord] = {}
    for start in range(0, len(ids), IN_CHUNK):
        part = ids[start:start + IN_CHUNK]
        tags: Dict[int, List[str]] = {}
        for image_id, tag in session.execute(_TAGS, {'ids': part}):
            tags.setdefault(image_id, []).append(tag)
        for r in session.execute(_RECORDS, {'ids': part}):
            out[r.id] = GalleryRecord(r.id, r.person_id, r.camera_id, r.timestamp, tags.get(r.id, []),
                                      r.source_name, r.image_path, r.sighting_id, r.site)
    return out


def _filtered(stmt, *, person_id: Optional[int] = None, sighting_id: Optional[int] = None,
              camera_ids: Optional[Sequence[int]] = None,
              exclude_camera: Optional[int] = None, after: Optional[datetime] = None,
              before: Optional[datetime] = None, tags: Optional[Sequence[str]] = None,
              sites: Optional[Sequence[str]] = None):
    if sites is not None:  # only these sites' (a key scoped to them)
        stmt = stmt.where(GalleryImage.site.in_(list(sites)))
    if person_id is not None:
        stmt = stmt.where(GalleryImage.person_id == person_id)
    if sighting_id is not None:
        stmt = stmt.where(GalleryImage.sighting_id == sighting_id)
    if camera_ids:
        stmt = stmt.where(GalleryImage.camera_id.in_(list(camera_ids)))
    if exclude_camera is not None:
        stmt = stmt.where(GalleryImage.camera_id != exclude_camera)
    if after is not None:
        stmt = stmt.where(GalleryImage.timestamp >= after)
    if before is not None:
        stmt = stmt.where(GalleryImage.timestamp <= before)
    for tag in dict.fromkeys(tags or ()):  # all of them; IN: the (tag, image_id) index lists the tag's ids
        stmt = stmt.where(GalleryImage.id.in_(select(GalleryTag.image_id).where(GalleryTag.tag == tag)))
    return stmt


def _count(filters: Dict[str, Any]):
    """The count statement; tags alone are counted in the tag index (no gallery row read)."""
    tags = list(dict.fromkeys(filters.get('tags') or ()))
    if tags and not any(v is not None and v != [] for k, v in filters.items() if k != 'tags'):
        stmt = select(func.count()).select_from(GalleryTag).where(GalleryTag.tag == tags[0])
        for tag in tags[1:]:
            other = GalleryTag.__table__.alias()
            stmt = stmt.where(select(other.c.image_id).where(other.c.tag == tag,
                                                             other.c.image_id == GalleryTag.image_id).exists())
        return stmt
    return _filtered(select(func.count(GalleryImage.id)), **filters)


def list_images(*, session: Session, offset: int = 0, limit: int = 50, **filters: Any) -> Tuple[List[GalleryImage], int]:
    """A page of images (newest id last) and the total count matching the filters (tags: indexed lookups)."""
    stmt = _filtered(select(GalleryImage), **filters).order_by(GalleryImage.id)
    total = session.scalar(_count(filters)) or 0
    return list(session.scalars(stmt.offset(offset).limit(limit))), total


def latest_image_ids(*, session: Session, person_id: int, limit: int,
                     sites: Optional[Sequence[str]] = None) -> List[int]:
    """The ids of a person's ``limit`` most recent gallery images (of these sites only, unless None)."""
    stmt = _filtered(select(GalleryImage.id), person_id=person_id, sites=sites).order_by(GalleryImage.id.desc())
    return list(session.scalars(stmt.limit(limit)))


def person_image_ids(*, session: Session, person_id: int, limit: int,
                     sites: Optional[Sequence[str]] = None) -> List[int]:
    """Up to ``limit`` ids of a person's gallery images (of these sites only, unless None; an erasure takes them a
    batch at a time)."""
    return list(session.scalars(_filtered(select(GalleryImage.id), person_id=person_id, sites=sites)
                                .order_by(GalleryImage.id).limit(limit)))


def identity_image_ids(*, session: Session, identity_id: int, limit: int) -> List[int]:
    """Up to ``limit`` ids of the gallery images of an identity's sightings."""
    return list(session.scalars(select(GalleryImage.id).join(Sighting, GalleryImage.sighting_id == Sighting.id)
                                .where(Sighting.identity_id == identity_id).order_by(GalleryImage.id).limit(limit)))


def expired_image_ids(*, session: Session, stored_before: datetime, limit: int,
                      camera_ids: Optional[Sequence[int]] = None, other_cameras_than: Sequence[int] = (),
                      sites: Optional[Sequence[str]] = None, other_sites_than: Sequence[str] = (),
                      keep_named: bool = False) -> List[int]:
    """Up to ``limit`` ids of gallery images stored before ``stored_before`` (oldest first), of ``camera_ids`` only
    or of cameras other than ``other_cameras_than``; ``keep_named``: not those of an enrolled (named) identity's
    sightings."""
    stmt = select(GalleryImage.id).where(GalleryImage.created_at < stored_before)
    if camera_ids is not None:
        stmt = stmt.where(GalleryImage.camera_id.in_(list(camera_ids)))
    if other_cameras_than:
        stmt = stmt.where(GalleryImage.camera_id.not_in(list(other_cameras_than)))
    if sites is not None:
        stmt = stmt.where(GalleryImage.site.in_(list(sites)))
    if other_sites_than:
        stmt = stmt.where(GalleryImage.site.not_in(list(other_sites_than)))
    if keep_named:
        named = (select(Sighting.id).join(Identity, Sighting.identity_id == Identity.id)
                 .where(Sighting.id == GalleryImage.sighting_id, Identity.name.is_not(None)))
        stmt = stmt.where(~named.exists())
    return list(session.scalars(stmt.order_by(GalleryImage.created_at, GalleryImage.id).limit(limit)))


# ---- sightings --------------------------------------------------------------------------------------------------
def add_sighting(*, session: Session, camera_id: int, first_time: Optional[datetime], last_time: Optional[datetime],
                 video: str = '', track_id: Optional[int] = None, frame_count: Optional[int] = None,
                 quality: Optional[float] = None, site: str = '', ingest_job_id: Optional[int] = None) -> Sighting:
    """A new sighting without images yet (:func:`add_images` with its ``sighting_id`` adds them; then
    :func:`count_sighting` sets its count and best image)."""
    sighting = Sighting(camera_id=camera_id, first_time=first_time, last_time=last_time, video=video,
                        track_id=track_id, frame_count=frame_count, quality=quality, crop_count=0, site=site,
                        ingest_job_id=ingest_job_id)
    session.add(sighting)
    session.flush()
    return sighting


def count_sighting(*, session: Session, sighting: Sighting) -> None:
    """Its crop count and best image (the lowest id: crops are stored best first) from its images."""
    ids = sighting_image_ids(session=session, sighting_id=sighting.id)
    sighting.crop_count = len(ids)
    sighting.best_image_id = ids[0] if ids else None


def get_sighting(*, session: Session, sighting_id: int) -> Optional[Sighting]:
    return session.get(Sighting, sighting_id)


def get_sightings(*, session: Session, sighting_ids: Sequence[int]) -> Dict[int, Sighting]:
    """Sightings by id in one query per 10,000 (missing ids are absent)."""
    ids = sorted({int(i) for i in sighting_ids})
    out: Dict[int, Sighting] = {}
    for start in range(0, len(ids), IN_CHUNK):
        part = ids[start:start + IN_CHUNK]
        out.update((r.id, r) for r in session.scalars(select(Sighting).where(Sighting.id.in_(part))))
    return out


def sighting_image_ids(*, session: Session, sighting_id: int) -> List[int]:
    """The ids of a sighting's images, in order (best first for a video's)."""
    return list(session.scalars(select(GalleryImage.id).where(GalleryImage.sighting_id == sighting_id)
                                .order_by(GalleryImage.id)))


def sighting_images(*, session: Session, sighting_id: int) -> List[GalleryImage]:
    return list(session.scalars(select(GalleryImage).where(GalleryImage.sighting_id == sighting_id)
                                .order_by(GalleryImage.id)))


def list_sightings(*, session: Session, offset: int = 0, limit: int = 50, camera_ids: Optional[Sequence[int]] = None,
                   after: Optional[datetime] = None, before: Optional[datetime] = None,
                   video: Optional[str] = None, sites: Optional[Sequence[str]] = None) -> Tuple[List[Sighting], int]:
    """A page of sightings (by id) and how many match. ``after``/``before``: the sighting's time range overlaps
    [after, before] (a sighting without times matches neither, as images without a timestamp do not)."""
    cond = []
    if camera_ids:
        cond.append(Sighting.camera_id.in_(list(camera_ids)))
    if after is not None:
        cond.append(Sighting.last_time >= after)
    if before is not None:
        cond.append(Sighting.first_time <= before)
    if video is not None:
        cond.append(Sighting.video == video)
    if sites is not None:
        cond.append(Sighting.site.in_(list(sites)))
    total = session.scalar(select(func.count(Sighting.id)).where(*cond)) or 0
    rows = session.scalars(select(Sighting).where(*cond).order_by(Sighting.id).offset(offset).limit(limit))
    return list(rows), total


def image_id_array(*, session: Session, after_id: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Every gallery id (above ``after_id``), sorted, as int64, read in chunks: 8 bytes an id, never Python
    objects for the whole gallery."""
    parts, last = [], after_id
    while True:
        ids = np.fromiter(session.scalars(select(GalleryImage.id).where(GalleryImage.id > last)
                                          .order_by(GalleryImage.id).limit(chunk)), np.int64)
        if len(ids) == 0:
            break
        parts.append(ids)
        last = int(ids[-1])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def ids_not_embedded_by(*, session: Session, model_id: Optional[int]) -> np.ndarray:
    """Ids of rows whose recorded vector comes from another model (or none), sorted int64."""
    cond = GalleryImage.model_version.is_(None)
    if model_id is not None:
        cond = cond | (GalleryImage.model_version != model_id)
    return np.fromiter(session.scalars(select(GalleryImage.id).where(cond).order_by(GalleryImage.id)), np.int64)


def referenced_contents(*, session: Session, sha256s: Sequence[str]) -> set:
    """Which of these contents some gallery row names (the orphan sweep keeps their files)."""
    wanted = list(dict.fromkeys(sha256s))
    found = set()
    for start in range(0, len(wanted), IN_CHUNK):
        found.update(session.scalars(select(GalleryImage.image_sha256).distinct()
                                     .where(GalleryImage.image_sha256.in_(wanted[start:start + IN_CHUNK]))))
    return found


def set_model_version(*, session: Session, image_ids: Sequence[int], model_id: int) -> None:
    if image_ids:
        session.execute(update(GalleryImage).where(GalleryImage.id.in_(list(image_ids)))
                        .values(model_version=model_id))


def delete_image(*, session: Session, image_id: int) -> bool:
    return delete_images(session=session, image_ids=[image_id]).images == 1


class Deletion(NamedTuple):
    """What :func:`delete_images` removed: counts, and the contents and paths of the deleted rows (their files go
    once no row names them: the caller unlinks them after the commit)."""
    images: int = 0
    vectors: int = 0  # of every model
    sightings: int = 0
    identities: int = 0
    files: Tuple[Tuple[str, str], ...] = ()  # (sha256, image_path) of the deleted rows

    def __add__(self, other: 'Deletion') -> 'Deletion':  # type: ignore[override]
        return Deletion(*(a + b for a, b in zip(self, other)))


def delete_images(*, session: Session, image_ids: Sequence[int]) -> Deletion:
    """Remove these gallery rows with their tags and every model's vectors, each logged as a 'delete' change (every
    engine and replica follows); the sightings left without images go with them (the others' counts and best images
    follow), and so do the identities left without sightings. Ids already gone are skipped. At most
    :data:`IN_CHUNK` ids a call."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return Deletion()
    if len(ids) > IN_CHUNK:
        raise ValueError(f'at most {IN_CHUNK} ids a call, got {len(ids)}')
    rows = session.execute(select(GalleryImage.id, GalleryImage.sighting_id, GalleryImage.image_sha256,
                                  GalleryImage.image_path).where(GalleryImage.id.in_(ids))).all()
    if not rows:
        return Deletion()
    ids = [r.id for r in rows]
    sighting_ids = sorted({r.sighting_id for r in rows if r.sighting_id is not None})
    # locked first (sorted: no deadlock): two replicas deleting a sighting's last images each count after the other
    sightings = list(session.scalars(select(Sighting).where(Sighting.id.in_(sighting_ids)).order_by(Sighting.id)
                                     .with_for_update())) if sighting_ids else []
    vectors = session.execute(delete(GalleryVector).where(GalleryVector.image_id.in_(ids))).rowcount or 0
    session.execute(delete(GalleryTag).where(GalleryTag.image_id.in_(ids)))
    session.execute(delete(GalleryImage).where(GalleryImage.id.in_(ids)))
    session.add_all([GalleryChange(image_id=i, op='delete') for i in ids])
    session.flush()
    removed_sightings, identities = _after_images_left(session=session, sightings=sightings, deleted=set(ids))
    return Deletion(images=len(ids), vectors=vectors, sightings=removed_sightings,
                    identities=delete_empty_identities(session=session, identity_ids=identities),
                    files=tuple((r.image_sha256, r.image_path) for r in rows))


def _after_images_left(*, session: Session, sightings: Sequence[Sighting], deleted: set) -> Tuple[int, List[int]]:
    """A sighting whose last image is deleted goes with it; otherwise its count follows and its best image, when
    that was deleted, is its next (crops are stored best first, so the lowest id left). (sightings removed, the
    identities they were linked to.)"""
    if not sightings:
        return 0, []
    left = {sid: (n, first) for sid, n, first in session.execute(
        select(GalleryImage.sighting_id, func.count(GalleryImage.id), func.min(GalleryImage.id))
        .where(GalleryImage.sighting_id.in_([x.id for x in sightings])).group_by(GalleryImage.sighting_id))}
    empty = [x for x in sightings if x.id not in left]
    for x in sightings:
        if x.id in left:
            x.crop_count = left[x.id][0]
            if x.best_image_id is None or x.best_image_id in deleted:
                x.best_image_id = left[x.id][1]
    identities = sorted({x.identity_id for x in empty if x.identity_id is not None})
    if empty:
        session.execute(delete(Sighting).where(Sighting.id.in_([x.id for x in empty])))
    return len(empty), identities


def delete_empty_identities(*, session: Session, identity_ids: Sequence[int]) -> int:
    """Remove those of these identities that no sighting is linked to any more; how many."""
    ids = sorted({int(i) for i in identity_ids})
    if not ids:
        return 0
    # locked, then counted: a replica linking a sighting to one of them holds its lock, and commits before we look
    locked = list(session.scalars(select(Identity.id).where(Identity.id.in_(ids)).order_by(Identity.id)
                                  .with_for_update()))
    linked = set(session.scalars(select(Sighting.identity_id).distinct().where(Sighting.identity_id.in_(locked))))
    empty = [i for i in locked if i not in linked]
    if empty:
        session.execute(delete(Identity).where(Identity.id.in_(empty)))
    return len(empty)


def count_images(*, session: Session) -> int:
    return session.scalar(select(func.count(GalleryImage.id))) or 0


# ---- vectors and the change log ---------------------------------------------------------------------------------
def put_vectors(*, session: Session, model_id: int, image_ids: Sequence[int], vectors: np.ndarray) -> None:
    """Store (or replace) the vectors of ``image_ids`` by ``model_id``, as float16."""
    ids = [int(i) for i in image_ids]
    if not ids:
        return
    if len(ids) != len(vectors):
        raise ValueError(f'{len(ids)} ids for {len(vectors)} vectors')
    session.execute(delete(GalleryVector).where(GalleryVector.model_id == model_id, GalleryVector.image_id.in_(ids)))
    data = np.asarray(vectors, dtype=np.float16)
    session.add_all([GalleryVector(image_id=i, model_id=model_id, vector=v.tobytes()) for i, v in zip(ids, data)])
    session.flush()


def get_vectors(*, session: Session, model_id: int, image_ids: Sequence[int]) -> Dict[int, np.ndarray]:
    """Stored float32 vectors (from float16) by image id; ids without a vector by ``model_id`` are absent."""
    out: Dict[int, np.ndarray] = {}
    ids = [int(i) for i in image_ids]
    for start in range(0, len(ids), IN_CHUNK):
        stmt = select(GalleryVector.image_id, GalleryVector.vector).where(
            GalleryVector.model_id == model_id, GalleryVector.image_id.in_(ids[start:start + IN_CHUNK]))
        for image_id, blob in session.execute(stmt):
            out[image_id] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
    return out


def last_change_seq(*, session: Session) -> int:
    return session.scalar(select(func.max(GalleryChange.seq))) or 0


def changes_after(*, session: Session, seq: int, also: Sequence[int] = (), limit: int = 100_000
                  ) -> List[Tuple[int, int, str]]:
    """(seq, image_id, op) after ``seq`` plus the listed older seqs (gaps still awaited), in seq order."""
    cond = GalleryChange.seq > seq
    if also:
        cond = cond | GalleryChange.seq.in_([int(x) for x in also])
    stmt = select(GalleryChange.seq, GalleryChange.image_id, GalleryChange.op).where(cond)
    return [tuple(r) for r in session.execute(stmt.order_by(GalleryChange.seq).limit(limit))]


# ---- models -----------------------------------------------------------------------------------------------------
def add_model(*, session: Session, path: str, name: str = '', sha256: str = '', min_score: Optional[float] = None,
              info: Optional[Dict[str, Any]] = None) -> ModelVersion:
    model = ModelVersion(path=path, name=name, sha256=sha256, min_score=min_score, info=info or {})
    session.add(model)
    session.flush()
    return model


def get_model(*, session: Session, model_id: int) -> Optional[ModelVersion]:
    return session.get(ModelVersion, model_id)


def list_models(*, session: Session) -> List[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def active_model(*, session: Session) -> Optional[ModelVersion]:
    return session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first()


def activate_model(*, session: Session, model_id: int) -> None:
    """Make ``model_id`` the only active model and mark every gallery vector as made by it (one transaction)."""
    session.execute(update(ModelVersion).values(active=False))
    session.execute(update(ModelVersion).where(ModelVersion.id == model_id).values(active=True))
    session.execute(update(GalleryImage).values(model_version=model_id))


# ---- jobs -------------------------------------------------------------------------------------------------------
def create_job(*, session: Session, kind: str, params: Dict[str, Any]) -> Job:
    job = Job(kind=kind, params=params, state=JobState.QUEUED)
    session.add(job)
    session.flush()
    return job


def get_job(*, session: Session, job_id: int) -> Optional[Job]:
    return session.get(Job, job_id)


def list_jobs(*, session: Session, offset: int = 0, limit: int = 50) -> Tuple[List[Job], int]:
    total = session.scalar(select(func.count(Job.id))) or 0
    return list(session.scalars(select(Job).order_by(Job.id.desc()).offset(offset).limit(limit))), total


def list_jobs_of_kind(*, session: Session, kind: str) -> List[Job]:
    """Every job of ``kind``, oldest first."""
    return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def update_job(*, session: Session, job_id: int, log_line: Optional[str] = None, max_log_chars: int = 20000,
               **values: Any) -> Optional[Job]:
    job = session.get(Job, job_id)
    if job is None:
        return None
    for key, value in values.items():
        setattr(job, key, value)
    if log_line:
        job.log = ((job.log or '') + log_line.rstrip('\n') + '\n')[-max_log_chars:]
    job.updated_at = utcnow()
    return job


def get_engine_position(*, session: Session, collection: str) -> Tuple[int, Dict[int, float]]:
    """(applied seq, awaited seqs -> since when, epoch seconds) of a shared engine's collection; (0, {}) if new."""
    row = session.get(EnginePosition, collection)
    if row is None:
        return 0, {}
    return row.applied_seq, {int(k): float(v) for k, v in (row.awaited or {}).items()}


def put_engine_position(*, session: Session, collection: str, applied_seq: int, awaited: Dict[int, float]) -> None:
    row = session.get(EnginePosition, collection)
    if row is None:
        row = EnginePosition(collection=collection)
        session.add(row)
    row.applied_seq, row.awaited = int(applied_seq), {str(k): float(v) for k, v in awaited.items()}


def interrupt_running_jobs(*, session: Session) -> int:
    """At start-up: jobs that were running when the service stopped can no longer finish."""
    result = session.execute(update(Job).where(Job.state.in_(ACTIVE_JOB_STATES))
                             .values(state=JobState.INTERRUPTED, error='the service restarted while the job was running'))
    return result.rowcount or 0
