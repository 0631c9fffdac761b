"""The audit trail, read by admins: filtered pages, or every matching event as CSV or JSON lines."""
import csv
import io
import json
from typing import Iterator, Literal, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from storage import audit as store
from storage import keys as key_store

from .. import audit
from ..deps import MAX_ID, PrincipalDep, StateDep, require_api_key
from ..forms import when
from ..schemas import ERRORS, AuditEventPublic, AuditEventsPublic
from .keys import within

router = APIRouter(prefix='/v1/admin/audit', tags=['admin'], dependencies=[Depends(require_api_key)],
                   responses=ERRORS)

COLUMNS = list(AuditEventPublic.model_fields)


class AuditFilters:
    def __init__(self, after: Optional[str] = Query(None, description='recorded at or after (ISO 8601)'),
                 before: Optional[str] = Query(None, description='recorded at or before (ISO 8601)'),
                 key_name: Optional[str] = Query(None, max_length=100, description="the key's name"),
                 role: Optional[Literal['read', 'write', 'admin', 'open', 'revoked', 'expired']] = None,
                 route: Optional[str] = Query(None, max_length=200, description='a route template, e.g. '
                                                                               '/v1/search'),
                 method: Optional[Literal['GET', 'POST', 'PATCH', 'PUT', 'DELETE']] = None,
                 status: Optional[int] = Query(None, ge=100, le=599),
                 client: Optional[str] = Query(None, max_length=64, description='client address')) -> None:
        self.values = dict(after=when('after', after), before=when('before', before), key_name=key_name, role=role,
                           route=route, method=method, status=status, client=client)


def _lines(state, filters: dict, fmt: str) -> Iterator[str]:
    with state.Session() as s:
        if fmt == 'csv':
            buf = io.StringIO()
            writer = csv.DictWriter(buf, COLUMNS)
            writer.writeheader()
            yield buf.getvalue()
        for row in store.iter_events(session=s, **filters):
            event = AuditEventPublic.model_validate(row).model_dump(mode='json')
            if fmt == 'csv':
                buf = io.StringIO()
                csv.DictWriter(buf, COLUMNS).writerow(dict(event, filters=json.dumps(event['filters'])))
                yield buf.getvalue()
            else:
                yield json.dumps(event) + '\n'


@router.get('', response_model=AuditEventsPublic,
            responses={200: {'content': {'text/csv': {}, 'application/x-ndjson': {}},
                             'description': 'a page (json), or every matching event (csv, jsonl)'}})
def read_audit(request: Request, state: StateDep, principal: PrincipalDep, filters: AuditFilters = Depends(),
               offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(100, ge=1, le=1000),
               format: Literal['json', 'csv', 'jsonl'] = Query('json', description='json: a page, newest first; '
                                                                                   'csv or jsonl: every matching '
                                                                                   'event, oldest first')):
    """The audit trail: who searched, listed, fetched, wrote, deleted or erased what, and when. An admin key scoped
    to sites reads the events of its sites' keys only."""
    state.audit.flush()  # what came before this request is in the answer
    if principal.sites:
        with state.Session() as s:
            filters.values['key_names'] = [k.name for k in key_store.list_keys(session=s) if within(principal, k)]
    if format != 'json':
        media = 'text/csv' if format == 'csv' else 'application/x-ndjson'
        return StreamingResponse(_lines(state, filters.values, format), media_type=media, headers={
            'Content-Disposition': f'attachment; filename="audit.{format}"'})
    with state.Session() as s:
        rows, total = store.list_events(session=s, offset=offset, limit=limit, **filters.values)
        data = [AuditEventPublic.model_validate(r) for r in rows]
    audit.note(request, results=len(data))
    return AuditEventsPublic(data=data, count=total)
