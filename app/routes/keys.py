"""Named API keys, made and revoked by admins, each with a role. The secret is answered once, at creation; the
environment's keys (AMG_API_KEY, ...) keep working beside them as bootstrap keys."""
from datetime import timezone

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.exc import IntegrityError

from storage import keys as store
from storage.db import utcnow

from ..deps import IdPath, StateDep, require_api_key
from ..schemas import ERRORS, KeyCreate, KeyCreated, KeyPublic, KeysPublic

router = APIRouter(prefix='/v1/admin/keys', tags=['admin'], dependencies=[Depends(require_api_key)],
                   responses=ERRORS)


@router.post('', response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, state: StateDep):
    """A new key; the answer holds its secret, shown this once."""
    expires = body.expires_at
    if expires is not None and expires.tzinfo is not None:
        expires = expires.astimezone(timezone.utc).replace(tzinfo=None)
    if expires is not None and expires <= utcnow():
        raise HTTPException(status_code=400, detail='expires_at: in the past')
    try:
        with state.Session.begin() as s:
            key, secret = store.create_key(session=s, name=body.name, role=body.role, expires_at=expires)
            return KeyCreated(**KeyPublic.model_validate(key).model_dump(), key=secret)
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f'a key named {body.name!r} exists already') from None


@router.get('', response_model=KeysPublic)
def list_keys(state: StateDep):
    """Every named key, revoked ones included, without secrets."""
    with state.Session() as s:
        rows = store.list_keys(session=s)
        return KeysPublic(data=[KeyPublic.model_validate(k) for k in rows], count=len(rows))


@router.delete('/{key_id}', response_model=KeyPublic)
def revoke_key(key_id: IdPath, state: StateDep):
    """Revoke a key: every replica refuses it from now on (401)."""
    with state.Session.begin() as s:
        key = store.revoke_key(session=s, key_id=key_id)
        if key is None:
            raise HTTPException(status_code=404, detail=f'key {key_id} not found')
        return KeyPublic.model_validate(key)
