"""Named API keys, made and revoked by admins, each with a role and the sites it may see. The secret is answered
once, at creation; the environment's keys (AMG_API_KEY, ...) keep working beside them as bootstrap keys. An admin
key scoped to sites makes, lists and revokes keys of its sites only."""
from datetime import timezone

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.exc import IntegrityError

from storage import keys as store
from storage.db import utcnow

from ..deps import IdPath, Principal, PrincipalDep, StateDep, require_api_key
from ..schemas import ERRORS, KeyCreate, KeyCreated, KeyPublic, KeysPublic

router = APIRouter(prefix='/v1/admin/keys', tags=['admin'], dependencies=[Depends(require_api_key)],
                   responses=ERRORS)


def within(principal: Principal, key) -> bool:
    """Whether a key is one ``principal`` administers: any, or (scoped to sites) those of its sites only."""
    return not principal.sites or bool(key.sites and set(key.sites) <= set(principal.sites))


def _within_own_sites(principal: Principal, sites) -> None:
    if principal.sites and (not sites or not set(sites) <= set(principal.sites)):
        raise HTTPException(status_code=403, detail=f'sites: key {principal.name!r} gives only its own sites: '
                                                    f'{", ".join(principal.sites)}')


@router.post('', response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, state: StateDep, principal: PrincipalDep):
    """A new key; the answer holds its secret, shown this once."""
    unknown = sorted(set(body.sites) - set(state.settings.site_list))
    if unknown:
        raise HTTPException(status_code=400, detail=f'sites: unknown {unknown[0]!r}; the sites are AMG_SITES: '
                                                    f'{", ".join(state.settings.site_list) or "none"}')
    _within_own_sites(principal, body.sites)
    expires = body.expires_at
    if expires is not None and expires.tzinfo is not None:
        expires = expires.astimezone(timezone.utc).replace(tzinfo=None)
    if expires is not None and expires <= utcnow():
        raise HTTPException(status_code=400, detail='expires_at: in the past')
    try:
        with state.Session.begin() as s:
            key, secret = store.create_key(session=s, name=body.name, role=body.role, sites=body.sites,
                                           expires_at=expires)
            return KeyCreated(**KeyPublic.model_validate(key).model_dump(), key=secret)
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f'a key named {body.name!r} exists already') from None


@router.get('', response_model=KeysPublic)
def list_keys(state: StateDep, principal: PrincipalDep):
    """Every named key, revoked ones included, without secrets (a key scoped to sites: those of its sites)."""
    with state.Session() as s:
        rows = [k for k in store.list_keys(session=s) if within(principal, k)]
        return KeysPublic(data=[KeyPublic.model_validate(k) for k in rows], count=len(rows))


@router.delete('/{key_id}', response_model=KeyPublic)
def revoke_key(key_id: IdPath, state: StateDep, principal: PrincipalDep):
    """Revoke a key: every replica refuses it from now on (401)."""
    with state.Session.begin() as s:
        key = store.get_key(session=s, key_id=key_id)
        if key is None or not within(principal, key):
            raise HTTPException(status_code=404, detail=f'key {key_id} not found')
        store.revoke_key(session=s, key_id=key_id)
        return KeyPublic.model_validate(key)
