"""The audit trail in SQL: requests appended in batches, read back filtered and in pages or chunks, and removed
only by age (its retention)."""
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from .db import AuditEvent

__all__ = ['append_events', 'list_events', 'iter_events', 'delete_events_before', 'EXPORT_CHUNK']

EXPORT_CHUNK = 5000  # rows an export reads at a time


def append_events(*, session: Session, events: Sequence[Dict[str, Any]]) -> None:
    """Append these events (AuditEvent columns) in one statement."""
    if events:
        session.execute(insert(AuditEvent), list(events))


def _conditions(*, after: Optional[datetime] = None, before: Optional[datetime] = None,
                key_name: Optional[str] = None, role: Optional[str] = None, route: Optional[str] = None,
                method: Optional[str] = None, status: Optional[int] = None, client: Optional[str] = None,
                key_names: Optional[Sequence[str]] = None) -> List:
    cond = [] if key_names is None else [AuditEvent.key_name.in_(list(key_names))]
    if after is not None:
        cond.append(AuditEvent.at >= after)
    if before is not None:
        cond.append(AuditEvent.at <= before)
    for column, value in ((AuditEvent.key_name, key_name), (AuditEvent.role, role), (AuditEvent.route, route),
                          (AuditEvent.method, method), (AuditEvent.status, status), (AuditEvent.client, client)):
        if value is not None:
            cond.append(column == value)
    return cond


def list_events(*, session: Session, offset: int = 0, limit: int = 100, **filters: Any
                ) -> Tuple[List[AuditEvent], int]:
    """A page of events, newest first, and how many match."""
    cond = _conditions(**filters)
    total = session.scalar(select(func.count(AuditEvent.id)).where(*cond)) or 0
    rows = session.scalars(select(AuditEvent).where(*cond).order_by(AuditEvent.id.desc()).offset(offset).limit(limit))
    return list(rows), total


def iter_events(*, session: Session, chunk: int = EXPORT_CHUNK, **filters: Any) -> Iterator[AuditEvent]:
    """Every matching event, oldest first, read ``chunk`` rows at a time (an export of millions stays small)."""
    cond, last = _conditions(**filters), 0
    while True:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.id > last, *cond)
                                    .order_by(AuditEvent.id).limit(chunk)))
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1].id


def delete_events_before(*, session: Session, cutoff: datetime, limit: int) -> int:
    """Remove up to ``limit`` of the oldest events recorded before ``cutoff``; how many."""
    ids = list(session.scalars(select(AuditEvent.id).where(AuditEvent.at < cutoff).order_by(AuditEvent.id)
                               .limit(limit)))
    if ids:
        session.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids)))
    return len(ids)
