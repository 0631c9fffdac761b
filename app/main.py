"""The FastAPI application: ``create_app(settings)``; ``amg-reid serve`` runs it with uvicorn."""
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Dict, Optional

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi.responses import FileResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.db import utcnow

from .audit import event_of
from .jobs import JobManager
from .routes import admin, audit, gallery, health, identities, keys, samples, search, sightings, videos
from .security import BrowserGuard
from .settings import Settings
from .state import ServiceState

__all__ = ['create_app']

_logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / 'static'


class RequestTooLarge(Exception):
    """Raised into the app by the body stream once it passes the byte limit."""


class LimitsAndMetrics:
    """Refuses over-long request bodies - up front by Content-Length, and on the stream itself (a chunked or lying
    body is cut off at the limit and answered 413) - and times every request by route (plain ASGI: the decorator
    form, BaseHTTPMiddleware, costs about a millisecond a request)."""

    def __init__(self, app: ASGIApp, max_request_bytes: int, limits: Optional[Dict[str, int]] = None) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.limits = limits or {}  # routes with their own limit (a video upload)

    @staticmethod
    def _too_large(size: str, limit: int) -> JSONResponse:
        return JSONResponse(status_code=413, content={
            'detail': f'request body of {size} bytes exceeds the limit of {limit}'})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope['path'], self.max_request_bytes)
        length = dict(scope['headers']).get(b'content-length', b'')
        if length.isdigit() and int(length) > limit:
            return await self._too_large(str(int(length)), limit)(scope, receive, send)
        start, status, received, cut_off, started = time.perf_counter(), 500, 0, False, False
        at = utcnow()  # the audit event's time: when the request came in
        request_state = scope.setdefault('state', {})
        request_state['amg_start'] = start  # a search's "receive" stage runs from here to its handler

        async def counting_receive() -> Message:
            nonlocal received, cut_off
            message = await receive()
            if message['type'] == 'http.request':
                received += len(message.get('body', b''))
                if received > limit:
                    cut_off = True
                    raise RequestTooLarge()
            return message

        async def send_and_note_status(message: Message) -> None:
            nonlocal status, started
            if cut_off:  # whatever the app made of the cut-off body (FastAPI: a 400), the answer is 413
                if message['type'] == 'http.response.start' and not started:
                    started, status = True, 413
                    await self._too_large(f'more than {limit}', limit)(scope, receive, send)
                return
            if message['type'] == 'http.response.start':
                started, status = True, message['status']
            await send(message)

        try:
            await self.app(scope, counting_receive, send_and_note_status)
        except RequestTooLarge:
            if not started:
                status = 413
                await self._too_large(f'more than {limit}', limit)(scope, receive, send)
        finally:
            service = getattr(scope['app'].state, 'service', None)
            if service is not None:
                end = time.perf_counter()
                route = getattr(scope.get('route'), 'path', 'unmatched')
                service.metrics.request_latency.labels(scope['method'], route, str(status)).observe(end - start)
                event = event_of(scope, status, at)
                if event is not None:
                    service.audit.record(event)
                stages = request_state.get('search_stages')
                if stages is not None and status == 200:
                    service.metrics.observe_stages(dict(stages, answer=end - request_state['handler_done']))


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = ServiceState(settings)
        service.startup()
        app.state.service = service
        app.state.jobs = JobManager(service.Session, settings.database_url, str(service.data_dir),
                                    max_workers=settings.job_workers, nice=settings.job_nice)
        yield
        app.state.jobs.shutdown()
        service.shutdown()

    app = FastAPI(title='amg-reid', version='0.1.0', lifespan=lifespan,
                  description='Person re-identification with AMG-pruned LA-Transformers: gallery, search, jobs.')

    # the last added runs first: the browser guard, then CORS (when origins are set), then the body limit
    app.add_middleware(LimitsAndMetrics, max_request_bytes=settings.max_request_bytes,
                       limits={'/v1/videos': settings.max_video_bytes})
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=['GET', 'POST', 'DELETE'], allow_headers=['X-API-Key', 'Content-Type'])
    app.add_middleware(BrowserGuard, cors_origins=settings.cors_origin_list)
    app.mount('/static', StaticFiles(directory=STATIC), name='static')
    for module in (health, search, gallery, sightings, identities, videos, admin, audit, keys, samples):
        app.include_router(module.router)
    app.include_router(identities.admin_router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, without the offending input and context: an input like Infinity cannot be written
        # as JSON (the default handler would fail with a 500), and echoing inputs back is not needed to fix them
        errors = [{k: v for k, v in e.items() if k not in ('input', 'ctx', 'url')} for e in exc.errors()]
        return JSONResponse(status_code=422, content={'detail': jsonable_encoder(errors)})

    @app.get('/', include_in_schema=False)
    def index():
        return FileResponse(STATIC / 'index.html')

    return app
