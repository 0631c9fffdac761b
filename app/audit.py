"""The audit trail: every /v1 request recorded (time, key name and role, client address, route, path, filters, k,
status, how many results; never an image), appended to ``audit_events`` (storage.audit) off the request path.

A request only puts its event on a queue (microseconds); a writer thread appends the queue to the database in
one statement every :data:`FLUSH_SECONDS`, so a search does not wait for a commit. What a crash can lose is the
last fraction of a second of events; a full queue (the database unreachable for long) drops new events and
counts them (``amg_audit_dropped_total``)."""
import logging
import queue
import threading
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qsl

from starlette.requests import Request

from storage import audit as store
from .metrics import Metrics

__all__ = ['AuditLog', 'note', 'event_of', 'FLUSH_SECONDS']

_logger = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5
MAX_PENDING = 100_000  # events waiting for the database at most (~50 MB)
AUDITED_PREFIX = '/v1/'
MAX_FILTER_CHARS = 200  # per filter value kept


def note(request: Request, **fields: Any) -> None:
    """What the handler knows for the audit event of this request: ``k``, ``results`` (matches or rows answered),
    ``filters`` (those that came in a form body: query parameters are recorded anyway)."""
    request.state.audit = fields


def event_of(scope: Dict[str, Any], status: int, at) -> Optional[Dict[str, Any]]:
    """The audit event of a finished request (None for routes outside /v1: health, metrics, the page)."""
    path = scope['path']
    if not path.startswith(AUDITED_PREFIX):
        return None
    state = scope.get('state', {})
    noted = state.get('audit') or {}
    principal = state.get('principal')  # app.deps.Principal; absent on a route that checks no key
    key_name, role = (principal.name, principal.role) if principal is not None else ('', 'open')
    filters = {k: v[:MAX_FILTER_CHARS] for k, v in parse_qsl(scope.get('query_string', b'').decode('latin-1'))}
    filters.update(noted.get('filters') or {})
    client = scope.get('client')
    route = getattr(scope.get('route'), 'path', 'unmatched')
    return dict(at=at, key_name=key_name, role=role, client=client[0][:64] if client else '', method=scope['method'],
                route=route[:200], path=path[:1024], status=status, filters=filters, k=noted.get('k'),
                results=noted.get('results'))


class AuditLog:
    def __init__(self, session_factory: Callable, metrics: Metrics, flush_seconds: float = FLUSH_SECONDS,
                 max_pending: int = MAX_PENDING) -> None:
        self.Session = session_factory
        self.metrics = metrics
        self.flush_seconds = flush_seconds
        self._queue: 'queue.Queue[Dict[str, Any]]' = queue.Queue(max_pending)
        self._retry: List[Dict[str, Any]] = []  # a batch the database refused, tried again first
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def record(self, event: Dict[str, Any]) -> None:
        """Queue one event; never blocks."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.metrics.audit_dropped.inc()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name='audit-writer', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the database is away: the batch waits in memory and is tried again
                _logger.exception('writing the audit trail failed')

    def flush(self) -> int:
        """Append every queued event now (a reader of the trail sees what came before its request); how many."""
        with self._flush_lock:
            batch, self._retry = self._retry, []
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return 0
            try:
                with self.Session.begin() as s:
                    store.append_events(session=s, events=batch)
            except Exception:
                self._retry = batch[-MAX_PENDING:]
                raise
            return len(batch)

