"""Dependencies shared by the routes."""
import secrets
from typing import Annotated, Iterator, Optional

from fastapi import Depends, Header, HTTPException, Path, Request
from sqlalchemy.orm import Session

from .state import NoModel, ServiceState, Snapshot


MAX_ID = 2 ** 31 - 1  # ids and filters fit the database's INTEGER columns (32-bit on PostgreSQL)
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.Session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_snapshot(state: StateDep) -> Snapshot:
    try:
        return state.snapshot()
    except NoModel as e:
        raise HTTPException(status_code=503, detail=str(e)) from None


SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]


def require_api_key(state: StateDep, x_api_key: Annotated[Optional[str], Header()] = None) -> None:
    expected = state.settings.api_key
    if not expected:
        raise HTTPException(status_code=401, detail='the admin API is disabled: set AMG_API_KEY on the server')
    # constant-time comparison: the key cannot be guessed byte by byte from response times
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail='missing or wrong X-API-Key header')
