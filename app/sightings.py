"""Sightings, the gallery's unit: storing one video track as a sighting (:func:`store_sighting`, for the ingest job
that runs the ``video`` package), "where else was this person" from a sighting (:func:`search_sighting`), and
search answers with one hit per sighting (:func:`group_by_sighting`).

A sighting's crops are ordinary gallery images (person unknown) stored through the upload path
(app.gallery_writes: image files, embedding, one transaction with the change log, then the engine), so every
search, filter and engine sees them as it sees uploads."""
import io
import math
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, List, Protocol, Sequence, Tuple

from starlette.concurrency import run_in_threadpool

from storage import crud
from storage.engine import MAX_EXCLUDED_IDS, GalleryFilter

from .deps import MAX_ID
from .imaging import DecodedImage, has_control_characters
from .schemas import QueryResult, SightingSummary
from .search_service import search_pooled
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ['Crop', 'SightingIn', 'SightingRejected', 'SightingNotFound', 'MAX_SIGHTING_CROPS', 'GROUP_OVERFETCH',
           'store_sighting', 'search_sighting', 'group_by_sighting']

MAX_SIGHTING_CROPS = 64  # crops one sighting may hold: "where else" leaves them all out by id (MAX_EXCLUDED_IDS)
assert MAX_SIGHTING_CROPS <= MAX_EXCLUDED_IDS
VIDEO_NAME_CHARS = 512  # sightings.video
# group_by=sighting asks the engine for this many times k crops, then keeps each sighting's best one
GROUP_OVERFETCH = 8


class Crop(Protocol):
    """One crop of a track (video.sightings.Crop has these attributes)."""
    image: Any  # RGB PIL image
    frame: int
    time: datetime
    box: Tuple[float, float, float, float]  # x, y, w, h in the frame, pixels
    quality: float  # 0..1


class SightingIn(Protocol):
    """One track of one camera's video (video.sightings.Sighting has these attributes); ``crops`` best first."""
    camera_id: Any  # an integer, or its decimal string ('3')
    track_id: int
    video: str
    first_time: datetime
    last_time: datetime
    frames: int
    crops: Sequence[Crop]


class SightingRejected(ValueError):
    """A sighting that cannot be stored as given (nothing was stored)."""


class SightingNotFound(LookupError):
    """No such sighting, or none of its crops has a vector by the active model."""


def _naive_utc(field: str, when: Any) -> datetime:
    if not isinstance(when, datetime):
        raise SightingRejected(f'{field}: expected a datetime, got {type(when).__name__}')
    return when if when.tzinfo is None else when.astimezone(timezone.utc).replace(tzinfo=None)


def _camera(value: Any) -> int:
    try:
        camera = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        camera = None
    if camera is None or not 0 <= camera <= MAX_ID:
        raise SightingRejected(f'camera_id: expected a gallery camera number 0..{MAX_ID}, got {value!r}')
    return camera


def _checked_crops(crops: Sequence[Crop]) -> List[Tuple[Crop, datetime, List[float]]]:
    if not crops:
        raise SightingRejected('crops: a sighting needs at least one crop')
    if len(crops) > MAX_SIGHTING_CROPS:
        raise SightingRejected(f'crops: at most {MAX_SIGHTING_CROPS} per sighting, got {len(crops)}')
    out = []
    for n, crop in enumerate(crops):
        image = crop.image
        if getattr(image, 'mode', None) != 'RGB' or min(getattr(image, 'size', (0, 0))) < 1:
            raise SightingRejected(f'crops[{n}].image: expected a non-empty RGB PIL image')
        box = [float(v) for v in crop.box]
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
            raise SightingRejected(f'crops[{n}].box: expected (x, y, w, h), finite, w and h > 0; got {crop.box!r}')
        try:
            quality = float(crop.quality)
        except (TypeError, ValueError):
            quality = math.nan
        if not 0.0 <= quality <= 1.0:  # NaN fails too
            raise SightingRejected(f'crops[{n}].quality: expected a number in 0..1, got {crop.quality!r}')
        if not 0 <= int(crop.frame) <= MAX_ID:
            raise SightingRejected(f'crops[{n}].frame: expected 0..{MAX_ID}, got {crop.frame!r}')
        out.append((crop, _naive_utc(f'crops[{n}].time', crop.time), box))
    # best first whatever the caller's order: the sighting's best crop is then its lowest image id
    return sorted(out, key=lambda c: -float(c[0].quality))


def _png(image: Any) -> bytes:
    """Lossless, so a rebuild that embeds the stored file again gets the vector stored now."""
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    return buf.getvalue()


def store_sighting(service: 'ServiceState', sighting: SightingIn, site: str = '') -> int:
    """Store one video track as one sighting of an unknown person; its id. Its crops become gallery images (each
    with its frame, time and box) through the upload path: embedded, written with the sighting and the change log
    in one transaction (a failure leaves no half sighting), then applied to the vector engine. Raises
    :class:`SightingRejected` for a malformed sighting (nothing stored), app.snapshot.NoModel without a model.
    Blocking: call it from a worker thread or a job."""
    items, metas, columns = sighting_rows(sighting, site)
    return service.gallery.add(items, metas, sighting=columns)[0].sighting_id


def sighting_rows(sighting: SightingIn, site: str = '') -> Tuple[List[DecodedImage], List[dict], dict]:
    """One track of ``site`` checked and laid out for the gallery: its crops as images (PNG), their GalleryImage
    columns, the sighting's columns (crud.add_sighting). Raises :class:`SightingRejected`."""
    camera = _camera(sighting.camera_id)
    video = str(sighting.video)
    if len(video) > VIDEO_NAME_CHARS or has_control_characters(video):
        raise SightingRejected(f'video: at most {VIDEO_NAME_CHARS} characters, no control characters')
    first, last = _naive_utc('first_time', sighting.first_time), _naive_utc('last_time', sighting.last_time)
    if last < first:
        raise SightingRejected(f'last_time {last.isoformat()} is before first_time {first.isoformat()}')
    crops = _checked_crops(sighting.crops)
    source = video.replace('\\', '/').rsplit('/', 1)[-1]
    items = [DecodedImage(crop.image, _png(crop.image), 'png', f'{source} frame {crop.frame}'[:VIDEO_NAME_CHARS])
             for crop, _, _ in crops]
    metas = [dict(person_id=None, camera_id=camera, timestamp=when, frame=int(crop.frame), box=box, tags=[],
                  site=site) for crop, when, box in crops]
    return items, metas, dict(camera_id=camera, first_time=first, last_time=last, video=video,
                              track_id=int(sighting.track_id), frame_count=int(sighting.frames),
                              quality=float(crops[0][0].quality), site=site)


async def search_sighting(service: 'ServiceState', snap: Snapshot, sighting_id: int, k: int, threshold: float,
                          flt: GalleryFilter, thumbnail_url: str, visible_parts: bool = True) -> QueryResult:
    """Where else was this person: the sighting's crops' stored vectors pooled into one query, as a person search
    pools a person's (app.search_service.search_pooled), the top ``k`` among what ``flt`` admits; the sighting's
    own crops are left out by the engine's filter. Raises :class:`SightingNotFound`."""
    def own_vectors():
        with service.Session() as s:
            sighting = crud.get_sighting(session=s, sighting_id=sighting_id)
            if sighting is None or (flt.sites and sighting.site not in flt.sites):  # not one the key sees
                raise SightingNotFound(f'sighting {sighting_id} not found')
            ids = crud.sighting_image_ids(session=s, sighting_id=sighting_id)[:MAX_EXCLUDED_IDS]
            return ids, crud.get_vectors(session=s, model_id=snap.model_id, image_ids=ids)
    ids, vectors = await run_in_threadpool(own_vectors)
    if not vectors:
        raise SightingNotFound(f'sighting {sighting_id} has no crop embedded by the active model')
    label = f'sighting {sighting_id} ({len(vectors)} crops)'
    return await search_pooled(service, snap, vectors, label, k, threshold,
                               replace(flt, exclude_ids=tuple(sorted(ids))), thumbnail_url, visible_parts)


async def group_by_sighting(service: 'ServiceState', results: Sequence[QueryResult], k: int) -> List[QueryResult]:
    """One match per sighting, its best-matching crop (matches are best first), at most ``k``, each with its
    sighting's camera and time range. The answers were searched with :data:`GROUP_OVERFETCH` times ``k``: a query
    whose best sightings have more crops than that among the top may get fewer than ``k`` sightings."""
    def sightings(ids):
        with service.Session() as s:
            return crud.get_sightings(session=s, sighting_ids=ids)
    wanted = {m.sighting_id for r in results for m in r.matches if m.sighting_id is not None}
    found = await run_in_threadpool(sightings, wanted) if wanted else {}
    out = []
    for result in results:
        seen, matches = set(), []
        for match in result.matches:
            key = ('sighting', match.sighting_id) if match.sighting_id is not None else ('image', match.image_id)
            if key in seen:
                continue
            seen.add(key)
            row = found.get(match.sighting_id)
            matches.append(match.model_copy(update={'sighting': None if row is None else
                                                    SightingSummary.model_validate(row)}))
            if len(matches) == k:
                break
        out.append(result.model_copy(update={'matches': matches}))
    return out
