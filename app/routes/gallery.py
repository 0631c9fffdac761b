import io
import logging
from typing import List, Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from models.imaging import ImageError, open_image
from storage import crud
from storage.db import GalleryImage

from .. import audit
from ..deps import (MAX_ID, IdPath, PrincipalDep, ScopeDep, SessionDep, SnapshotDep, StateDep, require_read,
                    require_write, site_for_write)
from ..forms import OffLoopFormRoute, int_list, per_file, read_images, str_list, when
from ..schemas import ERRORS, ErasureReceipt, GalleryItemPublic, GalleryItemsPublic, Message

_logger = logging.getLogger(__name__)

router = APIRouter(prefix='/v1', route_class=OffLoopFormRoute, tags=['gallery'], dependencies=[Depends(require_read)],
                   responses=ERRORS)


def public(row: GalleryImage, request: Request) -> GalleryItemPublic:
    item = GalleryItemPublic.model_validate(row)
    item.image_url = str(request.url_for('gallery_image', image_id=row.id).path)
    item.thumbnail_url = str(request.url_for('gallery_thumbnail', image_id=row.id).path)
    return item


@router.post('/gallery', response_model=GalleryItemsPublic, status_code=201, dependencies=[Depends(require_write)])
async def upload_gallery(
        request: Request, state: StateDep, _snap: SnapshotDep, principal: PrincipalDep,
        images: List[UploadFile] = File(..., description='one or more person crops'),
        person_id: Optional[str] = Form(None, description='one id for all files, or comma-separated, one per file '
                                                          '(none: unknown persons)'),
        camera_id: Optional[str] = Form(None, description='one for all, or one per file (default 0)'),
        timestamp: Optional[str] = Form(None, description='ISO 8601, for all files'),
        tags: Optional[str] = Form(None, description='comma-separated, for all files'),
        site: Optional[str] = Form(None, description="the site (AMG_SITES) they belong to; default: the key's only "
                                                     'site'),
):
    """Add images to the gallery (embedded in batches), each a sighting of one; without ``person_id`` their persons
    are unknown. Nothing is stored unless every file and field is valid."""
    site_name = site_for_write(state, principal, site)  # a 400 before any file is read
    decoded = await read_images(images, state.settings, state.decode_limiter)
    n = len(decoded)
    given = int_list('person_id', person_id)
    pids: List[Optional[int]] = [None] * n if given is None else list(per_file('person_id', given, n))
    cams = per_file('camera_id', int_list('camera_id', camera_id), n, default=0)
    if any(p is not None and p < 0 for p in pids) or any(c < 0 for c in cams):
        raise HTTPException(status_code=400, detail='person_id and camera_id must be >= 0')
    ts, tag_list = when('timestamp', timestamp), str_list(tags) or []
    metas = [dict(person_id=p, camera_id=c, timestamp=ts, tags=tag_list, site=site_name) for p, c in zip(pids, cams)]
    # the model forward runs off the event loop
    rows = await run_in_threadpool(state.gallery.add, decoded, metas)
    return GalleryItemsPublic(data=[public(r, request) for r in rows], count=len(rows))


@router.get('/gallery', response_model=GalleryItemsPublic)
def list_gallery(request: Request, session: SessionDep, scope: ScopeDep,
                 offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(50, ge=1, le=500),
                 person_id: Optional[int] = Query(None, ge=0, le=MAX_ID), camera_id: Optional[str] = None,
                 tags: Optional[str] = None,
                 after: Optional[str] = None, before: Optional[str] = None,
                 sighting_id: Optional[int] = Query(None, ge=0, le=MAX_ID, description="only this sighting's")):
    """Gallery images, paginated and filtered."""
    rows, total = crud.list_images(session=session, offset=offset, limit=limit, person_id=person_id,
                                   sighting_id=sighting_id, sites=scope,
                                   camera_ids=int_list('camera_id', camera_id), tags=str_list(tags),
                                   after=when('after', after), before=when('before', before))
    audit.note(request, results=len(rows))
    return GalleryItemsPublic(data=[public(r, request) for r in rows], count=total)


def _row(session, image_id: int, principal) -> GalleryImage:
    """The row, 404 when it is missing or of a site the key does not see (the same answer: nothing is told)."""
    row = crud.get_image(session=session, image_id=image_id)
    if row is None or not principal.sees(row.site):
        raise HTTPException(status_code=404, detail=f'gallery image {image_id} not found')
    return row


@router.get('/gallery/{image_id}', response_model=GalleryItemPublic)
def get_gallery_item(image_id: IdPath, request: Request, session: SessionDep, principal: PrincipalDep):
    """One gallery image's metadata."""
    return public(_row(session, image_id, principal), request)


@router.delete('/gallery/{image_id}', response_model=Message, dependencies=[Depends(require_write)])
def delete_gallery_item(image_id: IdPath, state: StateDep, session: SessionDep, principal: PrincipalDep):
    """Remove an image from the database, the index and the image store."""
    _row(session, image_id, principal)
    if not state.gallery.delete(image_id):
        raise HTTPException(status_code=404, detail=f'gallery image {image_id} not found')
    return Message(detail=f'gallery image {image_id} deleted')


@router.get('/gallery/{image_id}/image', name='gallery_image', response_class=Response,
            responses={200: {'content': {'image/jpeg': {}, 'image/png': {}}, 'description': 'the image file'}})
def gallery_image(image_id: IdPath, state: StateDep, session: SessionDep, principal: PrincipalDep):
    """The original image file."""
    row = _row(session, image_id, principal)
    path = _stored_file(state, row)
    return FileResponse(path, media_type='image/jpeg' if path.suffix == '.jpg' else 'image/png')


def _stored_file(state, row):
    """The image's file; 410 (and a log line) when it is gone from the disk while its row remains."""
    path = state.images.resolve(row.image_path)
    if not path.is_file():
        _logger.error('gallery image %d: stored file %s is missing', row.id, row.image_path)
        raise HTTPException(status_code=410, detail=f'image {row.id}: its stored file is missing')
    return path


@router.get('/gallery/{image_id}/thumbnail', name='gallery_thumbnail', response_class=Response,
            responses={200: {'content': {'image/jpeg': {}}, 'description': 'a JPEG thumbnail'}})
def gallery_thumbnail(image_id: IdPath, state: StateDep, session: SessionDep, principal: PrincipalDep):
    """A small JPEG (at most 64x128) for result lists."""
    row = _row(session, image_id, principal)
    try:
        im = open_image(_stored_file(state, row))
    except ImageError as e:
        _logger.error('gallery image %d: stored file unreadable (%s)', image_id, e)
        raise HTTPException(status_code=410, detail=f'image {image_id}: its stored file is unreadable') from None
    im.thumbnail((64, 128), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format='JPEG', quality=85)
    # private: a shared cache must not hand one key's (one site's) thumbnails to another, nor after an erasure
    return Response(buf.getvalue(), media_type='image/jpeg',
                    headers={'Cache-Control': 'private, max-age=3600', 'Vary': 'X-API-Key'})


@router.get('/persons/{person_id}', response_model=GalleryItemsPublic, tags=['persons'])
def person_images(person_id: IdPath, request: Request, session: SessionDep, scope: ScopeDep,
                  offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(100, ge=1, le=500)):
    """All gallery images of one person."""
    rows, total = crud.list_images(session=session, offset=offset, limit=limit, person_id=person_id, sites=scope)
    if total == 0:
        raise HTTPException(status_code=404, detail=f'person {person_id} has no gallery images')
    audit.note(request, results=len(rows))
    return GalleryItemsPublic(data=[public(r, request) for r in rows], count=total)


@router.delete('/persons/{person_id}', response_model=ErasureReceipt, tags=['persons'],
               dependencies=[Depends(require_write)])
def erase_person(person_id: IdPath, request: Request, state: StateDep, scope: ScopeDep):
    """Erase a person: every gallery image of theirs (rows, files, every model's vectors), the sightings and
    identities left empty (a key scoped to sites: of its sites); answers what was removed. Afterwards no route
    answers any of it."""
    receipt = state.gallery.erase_person(person_id, scope)
    if receipt is None:
        raise HTTPException(status_code=404, detail=f'person {person_id} has no gallery images')
    audit.note(request, results=receipt['images'])
    return ErasureReceipt(erased=f'person {person_id}', **receipt)
