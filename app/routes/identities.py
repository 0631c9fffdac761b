"""Identities the service found (app.identities): listed, each with its timeline; named (enrolment), merged and
split by operators."""
from datetime import timezone
from typing import Dict, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from storage import identities as store

from .. import audit
from ..deps import (MAX_ID, IdPath, PrincipalDep, ScopeDep, SessionDep, SnapshotDep, StateDep, require_api_key,
                    require_read, require_write)
from ..identities import IdentityConflict
from ..imaging import has_control_characters
from ..schemas import (ERRORS, ErasureReceipt, IdentitiesPublic, IdentityMerge, IdentityPublic, IdentityRecluster,
                       IdentitySplit, IdentityTimeline, IdentityUpdate, SightingSummary)

router = APIRouter(prefix='/v1/identities', tags=['identities'], responses=ERRORS)
admin_router = APIRouter(prefix='/v1/admin/identities', tags=['admin'], responses=ERRORS,
                         dependencies=[Depends(require_api_key)])


@admin_router.post('/recluster', response_model=Dict[str, int])
async def recluster_identities(body: IdentityRecluster, state: StateDep, snap: SnapshotDep, scope: ScopeDep):
    """Link a time window's video sightings again, all at once, with everything known since (average-linkage
    clustering of their pooled crops; one camera's overlapping sightings never one person). Enrolled (named)
    identities keep their sightings. Answers how many sightings it took, the identities they form and how many
    moved. Each site's sightings are clustered on their own (a key scoped to sites: its sites' only)."""
    utc = [t if t.tzinfo is None else t.astimezone(timezone.utc).replace(tzinfo=None) for t in (body.after,
                                                                                              body.before)]
    if utc[1] < utc[0]:
        raise HTTPException(status_code=400, detail='before: earlier than after')
    try:
        return await run_in_threadpool(state.identities.recluster, snap, utc[0], utc[1], body.threshold, scope)
    except IdentityConflict as e:
        raise HTTPException(status_code=400, detail=str(e)) from None


def _visible(state: StateDep, principal, *identity_ids: int) -> None:
    """404 for an identity that is missing or of a site the key does not see (the same answer)."""
    with state.Session() as s:
        for identity_id in identity_ids:
            identity = store.get_identity(session=s, identity_id=identity_id)
            if identity is None or not principal.sees(identity.site):
                raise HTTPException(status_code=404, detail=f'identity {identity_id} not found')


def _public(session, identity) -> IdentityPublic:
    return IdentityPublic.model_validate(store.summaries(session=session, identities=[identity])[0]._asdict())


@router.get('', response_model=IdentitiesPublic, dependencies=[Depends(require_read)])
def list_identities(request: Request, session: SessionDep, scope: ScopeDep, offset: int = Query(0, ge=0, le=MAX_ID),
                    limit: int = Query(50, ge=1, le=500),
                    named: Optional[bool] = Query(None, description='only enrolled (true) or only unnamed (false)')):
    """Identities by id, each with how many sightings, when and on which cameras."""
    rows, total = store.list_identities(session=session, offset=offset, limit=limit, named=named, sites=scope)
    audit.note(request, results=len(rows))
    return IdentitiesPublic(data=[IdentityPublic.model_validate(r._asdict()) for r in rows], count=total)


@router.get('/{identity_id}', response_model=IdentityTimeline, dependencies=[Depends(require_read)])
def get_identity(identity_id: IdPath, session: SessionDep, principal: PrincipalDep):
    """An identity and its timeline: its sightings across cameras in time order."""
    identity = store.get_identity(session=session, identity_id=identity_id)
    if identity is None or not principal.sees(identity.site):
        raise HTTPException(status_code=404, detail=f'identity {identity_id} not found')
    timeline = [SightingSummary.model_validate(x) for x in store.identity_sightings(session=session,
                                                                                   identity_id=identity_id)]
    return IdentityTimeline(**_public(session, identity).model_dump(), timeline=timeline)


@router.delete('/{identity_id}', response_model=ErasureReceipt, dependencies=[Depends(require_write)])
def erase_identity(identity_id: IdPath, request: Request, state: StateDep, principal: PrincipalDep):
    """Erase an identity (named or not): the images of all its sightings (rows, files, every model's vectors), the
    sightings and the identity; answers what was removed. Afterwards no route answers any of it."""
    _visible(state, principal, identity_id)
    receipt = state.gallery.erase_identity(identity_id)
    if receipt is None:
        raise HTTPException(status_code=404, detail=f'identity {identity_id} not found')
    audit.note(request, results=receipt['images'])
    return ErasureReceipt(erased=f'identity {identity_id}', **receipt)


def _changed(state: StateDep, change, *args) -> IdentityPublic:
    try:
        identity = change(*args)
    except KeyError as e:
        raise HTTPException(status_code=404, detail=f'identity {e.args[0]} not found') from None
    except IdentityConflict as e:
        raise HTTPException(status_code=409, detail=str(e)) from None
    with state.Session() as s:
        return _public(s, store.get_identity(session=s, identity_id=identity.id))


@router.patch('/{identity_id}', response_model=IdentityPublic, dependencies=[Depends(require_write)])
def rename_identity(identity_id: IdPath, body: IdentityUpdate, state: StateDep, principal: PrincipalDep):
    """Name an identity (enrolment) or take its name away (``null``)."""
    name = None if body.name is None else body.name.strip()
    if name is not None and (not name or has_control_characters(name)):
        raise HTTPException(status_code=400, detail='name: empty, or control characters')
    _visible(state, principal, identity_id)
    return _changed(state, state.identities.rename, identity_id, name)


@router.post('/{identity_id}/merge', response_model=IdentityPublic, dependencies=[Depends(require_write)],
             responses={409: {'description': 'the two were seen by one camera at the same time'}})
def merge_identities(identity_id: IdPath, body: IdentityMerge, state: StateDep, principal: PrincipalDep):
    """One person, not two: ``other_id``'s sightings move into this identity, and ``other_id`` is removed. Refused
    (409) when one camera saw both at the same time, or they are of two sites."""
    _visible(state, principal, identity_id, body.other_id)
    return _changed(state, state.identities.merge, identity_id, body.other_id)


@router.post('/{identity_id}/split', response_model=IdentityPublic, status_code=201,
             dependencies=[Depends(require_write)])
def split_identity(identity_id: IdPath, body: IdentitySplit, state: StateDep, principal: PrincipalDep):
    """Two people, not one: these sightings become a new identity (answered)."""
    _visible(state, principal, identity_id)
    return _changed(state, state.identities.split, identity_id, body.sighting_ids)
