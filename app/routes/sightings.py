from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from storage import crud

from .. import audit
from ..deps import MAX_ID, IdPath, PrincipalDep, ScopeDep, SessionDep, SnapshotDep, StateDep, require_read
from ..forms import bad, int_list, when
from ..imaging import has_control_characters
from ..frames import NoRecording, Recording, recording_of
from ..schemas import ERRORS, FrameView, SearchResponse, SightingPublic, SightingsPublic, SightingSummary, TrackedBox
from ..sightings import SightingNotFound, search_sighting
from .gallery import public
from .search import PooledSearch

router = APIRouter(prefix='/v1/sightings', tags=['sightings'], dependencies=[Depends(require_read)],
                   responses=ERRORS)


@router.get('', response_model=SightingsPublic)
def list_sightings(request: Request, session: SessionDep, scope: ScopeDep, offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(50, ge=1, le=500),
                   camera_id: Optional[str] = Query(None, description='only these cameras (comma list)'),
                   after: Optional[str] = Query(None, description='only sightings that end at or after (ISO 8601)'),
                   before: Optional[str] = Query(None, description='only sightings that start at or before '
                                                                   '(ISO 8601)'),
                   video: Optional[str] = Query(None, max_length=512, description='only from this video')):
    """Sightings, paginated and filtered (by id); a time range selects those that overlap it."""
    if video is not None and has_control_characters(video):
        raise bad('video', 'control characters (tab, newline, NUL, ...) are not allowed')
    rows, total = crud.list_sightings(session=session, offset=offset, limit=limit,
                                      camera_ids=int_list('camera_id', camera_id), after=when('after', after),
                                      before=when('before', before), video=video, sites=scope)
    audit.note(request, results=len(rows))
    return SightingsPublic(data=[SightingSummary.model_validate(r) for r in rows], count=total)


@router.get('/{sighting_id}', response_model=SightingPublic)
def get_sighting(sighting_id: IdPath, request: Request, session: SessionDep, principal: PrincipalDep):
    """One sighting: camera, time range, and its crops (best first) with frame, time and box."""
    row = crud.get_sighting(session=session, sighting_id=sighting_id)
    if row is None or not principal.sees(row.site):
        raise HTTPException(status_code=404, detail=f'sighting {sighting_id} not found')
    crops = [public(image, request) for image in crud.sighting_images(session=session, sighting_id=sighting_id)]
    return SightingPublic(**SightingSummary.model_validate(row).model_dump(), crops=crops)


FramePath = Annotated[int, Path(ge=0, le=MAX_ID, description="0-based, as the crops' frame numbers")]


def _recording(session, state, principal, sighting_id: int, frame: int) -> Recording:
    row = crud.get_sighting(session=session, sighting_id=sighting_id)
    if row is None or not principal.sees(row.site):
        raise HTTPException(status_code=404, detail=f'sighting {sighting_id} not found')
    try:
        recording = recording_of(session, state.data_dir, row)
        recording.check_frame(frame)
    except NoRecording as e:
        raise HTTPException(status_code=404, detail=str(e)) from None
    return recording


@router.get('/{sighting_id}/frames/{frame}', response_model=FrameView)
def sighting_frame(sighting_id: IdPath, frame: FramePath, request: Request, session: SessionDep, state: StateDep,
                   principal: PrincipalDep, scope: ScopeDep):
    """A frame of the sighting's recording (one it spans) with every box tracked in it, each with the sighting its
    track became: the frame viewer's data. 404 for a sighting without a recording on the server (an uploaded
    crop) and a frame outside its track."""
    from video.decode import probe
    recording = _recording(session, state, principal, sighting_id, frame)
    from video import VideoError
    first, last = recording.span()
    try:
        info = probe(recording.video_path)
    except VideoError:  # replaced or damaged since it was ingested
        raise HTTPException(status_code=404, detail=f'sighting {sighting_id}: its recording cannot be read') from None
    boxes = recording.boxes(session, frame, scope)
    audit.note(request, results=len(boxes))
    return FrameView(sighting_id=sighting_id, frame=frame, first_frame=first, last_frame=last, width=info.width,
                     height=info.height, boxes=[TrackedBox(**b) for b in boxes],
                     image_url=str(request.url_for('sighting_frame_image', sighting_id=sighting_id,
                                                   frame=frame).path))


@router.get('/{sighting_id}/frames/{frame}/image', name='sighting_frame_image', response_class=Response,
            responses={200: {'content': {'image/jpeg': {}}, 'description': 'the frame as a JPEG'}})
def sighting_frame_image(sighting_id: IdPath, frame: FramePath, session: SessionDep, state: StateDep,
                         principal: PrincipalDep):
    """The frame itself, a JPEG at the recording's size."""
    import io

    from PIL import Image
    recording = _recording(session, state, principal, sighting_id, frame)
    try:
        pixels = recording.image(frame)
    except NoRecording as e:
        raise HTTPException(status_code=404, detail=str(e)) from None
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format='JPEG', quality=85)
    # private, as thumbnails: a shared cache must not hand one key's frames to another, nor after an erasure
    return Response(buf.getvalue(), media_type='image/jpeg',
                    headers={'Cache-Control': 'private, max-age=3600', 'Vary': 'X-API-Key'})


@router.post('/{sighting_id}/search', response_model=SearchResponse)
async def search_from_sighting(sighting_id: IdPath, request: Request, state: StateDep, snap: SnapshotDep,
                               query: Annotated[PooledSearch, Depends()]):
    """Where else was this person: the sighting's crops pooled into one multi-shot query (as a person search pools
    a person's images) against the rest of the gallery (the sighting's own crops left out)."""
    return await query.answer(request, state, snap, search_sighting, sighting_id, SightingNotFound)
