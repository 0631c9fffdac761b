"""Dependencies shared by the routes."""
import secrets
from typing import Annotated, Iterator, Optional, Tuple

from fastapi import Depends, Header, HTTPException, Path, Request
from sqlalchemy.orm import Session

from .schemas import MAX_ID
from .snapshot import NoModel, Snapshot
from .state import ServiceState


IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]


async def get_state(request: Request) -> ServiceState:
    # async: a plain def would cost every request a trip through the thread pool for an attribute read
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.Session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_snapshot(state: StateDep) -> Snapshot:
    try:
        return state.snapshot()
    except NoModel as e:
        raise HTTPException(status_code=503, detail=str(e)) from None


SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]


ROLES = ('read', 'write', 'admin')  # each opens what the ones before it open


def _principal(state: ServiceState, given: Optional[str]) -> Optional[Tuple[str, str]]:
    """(key name, role) of the key ``given``, or None when it is none of the server's keys."""
    if given is None:
        return None
    s = state.settings
    found = None
    # every key compared in constant time, none skipped: a key cannot be guessed from response times
    for name, role, key in (('AMG_API_KEY', 'admin', s.api_key), ('AMG_WRITE_API_KEY', 'write', s.write_api_key),
                            ('AMG_READ_API_KEY', 'read', s.read_api_key)):
        if key and secrets.compare_digest(given.encode(), key.encode()) and found is None:
            found = (name, role)
    return found


def _admits(principal: Optional[Tuple[str, str]], role: str) -> bool:
    return principal is not None and ROLES.index(principal[1]) >= ROLES.index(role)


def _note(request: Request, principal: Optional[Tuple[str, str]], open_role: str = '') -> None:
    """Who made the request, for the audit trail (app.audit): a key's name and role, or '' and 'open'."""
    request.state.principal = principal or ('', open_role or 'open')


KeyHeader = Annotated[Optional[str], Header(description='the read, write or admin key, when the server sets one')]


async def require_api_key(request: Request, state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Admin: always behind AMG_API_KEY (off without it)."""
    principal = _principal(state, x_api_key)
    _note(request, principal)
    if not state.settings.api_key:
        raise HTTPException(status_code=401, detail='the admin API is disabled: set AMG_API_KEY on the server')
    if not _admits(principal, 'admin'):
        raise HTTPException(status_code=401, detail='missing or wrong X-API-Key header')


async def require_read(request: Request, state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Searches and gallery reads: open unless AMG_READ_API_KEY is set (the write and admin keys also read)."""
    principal = _principal(state, x_api_key)
    _note(request, principal)
    if state.settings.read_api_key and not _admits(principal, 'read'):
        raise HTTPException(status_code=401, detail='this server needs a read key: missing or wrong X-API-Key header')


async def require_write(request: Request, state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Gallery uploads and deletes: AMG_WRITE_API_KEY (or the admin key) when set, else whatever reads need."""
    s = state.settings
    if s.write_api_key:
        principal = _principal(state, x_api_key)
        _note(request, principal)
        if not _admits(principal, 'write'):
            raise HTTPException(status_code=401,
                                detail='this server needs a write key: missing or wrong X-API-Key header')
    else:
        await require_read(request, state, x_api_key)
