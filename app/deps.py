"""Dependencies shared by the routes."""
import secrets
from dataclasses import dataclass
from typing import Annotated, Iterator, Optional, Tuple

from fastapi import Depends, Header, HTTPException, Path, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from storage import keys
from storage.db import utcnow

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


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a key's name and role, and the sites it may see (empty: every site); an open
    route's caller without a key is ``OPEN``."""
    name: str
    role: str  # read | write | admin | open
    sites: Tuple[str, ...] = ()

    @property
    def scope(self) -> Optional[Tuple[str, ...]]:
        """The sites its requests are limited to (None: every site)."""
        return self.sites or None

    def sees(self, site: str) -> bool:
        return not self.sites or site in self.sites

    def admits(self, role: str) -> bool:
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)


OPEN = Principal('', 'open')


def _environment_key(state: ServiceState, given: str) -> Optional[Principal]:
    """The bootstrap key (AMG_API_KEY, AMG_WRITE_API_KEY, AMG_READ_API_KEY) ``given`` is, if any."""
    s = state.settings
    found = None
    # every key compared in constant time, none skipped: a key cannot be guessed from response times
    # without a write key the read key writes too (writes need what reads need)
    read_role = 'read' if s.write_api_key else 'write'
    for name, role, key in (('AMG_API_KEY', 'admin', s.api_key), ('AMG_WRITE_API_KEY', 'write', s.write_api_key),
                            ('AMG_READ_API_KEY', read_role, s.read_api_key)):
        if key and secrets.compare_digest(given.encode(), key.encode()) and found is None:
            found = Principal(name, role)
    return found


def _named_key(state: ServiceState, given: str) -> Tuple[Optional[Principal], str]:
    """The named key ``given`` is (storage.keys), read from the database on every request: a key revoked on one
    replica is refused by all at once; and why it is refused ('' when it is not: revoked, expired)."""
    with state.Session() as s:
        key = keys.find_key(session=s, secret=given)
    if key is None:
        return None, ''
    if key.revoked_at is not None:
        return Principal(key.name, 'revoked'), f'key {key.name!r} was revoked'
    if key.expires_at is not None and key.expires_at <= utcnow():
        return Principal(key.name, 'expired'), f'key {key.name!r} expired at {key.expires_at.isoformat()}Z'
    return Principal(key.name, key.role, tuple(key.sites)), ''


async def _principal(request: Request, state: ServiceState, given: Optional[str]) -> Optional[Principal]:
    """The key ``given`` as a principal (None: no key, or none the server knows), noted for the audit trail."""
    found, refused = None, ''
    if given:
        found = _environment_key(state, given)
        if found is None and given.startswith(keys.KEY_PREFIX):
            found, refused = await run_in_threadpool(_named_key, state, given)
    request.state.principal = found or OPEN  # the audit trail names a refused key too
    if refused:
        raise HTTPException(status_code=401, detail=refused)
    if given and found is None:  # a key the server does not know is refused even where no key is needed
        raise HTTPException(status_code=401, detail='unknown X-API-Key: not one of this server\'s keys')
    return found


def _refuse(principal: Optional[Principal], role: str, missing: str) -> None:
    if principal is None:
        raise HTTPException(status_code=401, detail=missing)
    if not principal.admits(role):
        raise HTTPException(status_code=403, detail=f'key {principal.name!r} ({principal.role}) may not do what '
                                                    f'needs a {role} key')


KeyHeader = Annotated[Optional[str], Header(description='the read, write or admin key, when the server sets one')]


async def require_api_key(request: Request, state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Admin: an admin key (AMG_API_KEY or a named one); the admin API is off without AMG_API_KEY."""
    principal = await _principal(request, state, x_api_key)
    if not state.settings.api_key:
        raise HTTPException(status_code=401, detail='the admin API is disabled: set AMG_API_KEY on the server')
    _refuse(principal, 'admin', 'missing or wrong X-API-Key header')


async def require_read(request: Request, state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Searches and gallery reads: open unless AMG_READ_API_KEY is set (write and admin keys also read); a key
    given is checked either way (a revoked one is refused, one scoped to sites sees only theirs)."""
    principal = await _principal(request, state, x_api_key)
    if state.settings.read_api_key:
        _refuse(principal, 'read', 'this server needs a read key: missing or wrong X-API-Key header')


async def require_write(request: Request, state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Gallery uploads and deletes: a write key (or an admin one) when AMG_WRITE_API_KEY is set, else whatever
    reads need (the read key then writes too); a named read key never writes."""
    principal = await _principal(request, state, x_api_key)
    s = state.settings
    if s.write_api_key or s.read_api_key:
        _refuse(principal, 'write', f'this server needs a {"write" if s.write_api_key else "read"} key: missing or '
                                    'wrong X-API-Key header')
    elif principal is not None:
        _refuse(principal, 'write', '')


# ---- sites ------------------------------------------------------------------------------------------------------
async def get_principal(request: Request) -> Principal:
    """Who the request comes from (set by the route's key check, which runs first)."""
    return getattr(request.state, 'principal', OPEN)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_scope(principal: PrincipalDep) -> Optional[Tuple[str, ...]]:
    return principal.scope


ScopeDep = Annotated[Optional[Tuple[str, ...]], Depends(get_scope)]  # the sites a request may see; None: every one


def require_deployment_admin(principal: PrincipalDep) -> None:
    """Administration of the whole deployment (models, jobs, indexes, server paths): not for a key scoped to
    sites, which could reach the others' data through it."""
    if principal.sites:
        raise HTTPException(status_code=403, detail=f'key {principal.name!r} is scoped to sites: this route '
                                                    'administers the whole deployment')


def site_for_write(state: ServiceState, principal: Principal, given: Optional[str]) -> str:
    """The site a write stores its rows under: ``given`` (one of AMG_SITES, and of the key's sites), or the key's
    only site; '' without AMG_SITES. 400 for an unknown or missing site, 403 for another site than the key's."""
    known = state.settings.site_list
    given = (given or '').strip() or None
    if not known:
        if given is not None:
            raise HTTPException(status_code=400, detail='site: this server has no sites (AMG_SITES)')
        return ''
    if given is None:
        if len(principal.sites) == 1:
            return principal.sites[0]
        raise HTTPException(status_code=400, detail=f'site: required, one of {", ".join(known)}')
    if given not in known:
        raise HTTPException(status_code=400, detail=f'site: unknown {given[:64]!r}; one of {", ".join(known)}')
    if not principal.sees(given):
        raise HTTPException(status_code=403, detail=f'site: key {principal.name!r} may not write to {given!r}')
    return given
