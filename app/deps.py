"""Dependencies shared by the routes."""
import secrets
from typing import Annotated, Iterator, Optional

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


def _matches(given: Optional[str], *keys: Optional[str]) -> bool:
    # constant-time comparison: a key cannot be guessed byte by byte from response times
    return given is not None and any(k and secrets.compare_digest(given.encode(), k.encode()) for k in keys)


KeyHeader = Annotated[Optional[str], Header(description='the read, write or admin key, when the server sets one')]


async def require_api_key(state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Admin: always behind AMG_API_KEY (off without it)."""
    expected = state.settings.api_key
    if not expected:
        raise HTTPException(status_code=401, detail='the admin API is disabled: set AMG_API_KEY on the server')
    if not _matches(x_api_key, expected):
        raise HTTPException(status_code=401, detail='missing or wrong X-API-Key header')


async def require_read(state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Searches and gallery reads: open unless AMG_READ_API_KEY is set (the write and admin keys also read)."""
    s = state.settings
    if s.read_api_key and not _matches(x_api_key, s.read_api_key, s.write_api_key, s.api_key):
        raise HTTPException(status_code=401, detail='this server needs a read key: missing or wrong X-API-Key header')


async def require_write(state: StateDep, x_api_key: KeyHeader = None) -> None:
    """Gallery uploads and deletes: AMG_WRITE_API_KEY (or the admin key) when set, else whatever reads need."""
    s = state.settings
    if s.write_api_key:
        if not _matches(x_api_key, s.write_api_key, s.api_key):
            raise HTTPException(status_code=401,
                                detail='this server needs a write key: missing or wrong X-API-Key header')
    else:
        await require_read(state, x_api_key)
