"""The FastAPI application: ``create_app(settings)``; ``amg-reid serve`` runs it with uvicorn."""
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .jobs import JobManager
from .routes import admin, gallery, health, samples, search
from .settings import Settings
from .state import ServiceState

__all__ = ['create_app']

_logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / 'static'


class LimitsAndMetrics:
    """Refuses over-long request bodies up front and times every request by route (plain ASGI: the decorator form,
    BaseHTTPMiddleware, costs about a millisecond a request)."""

    def __init__(self, app: ASGIApp, max_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        length = dict(scope['headers']).get(b'content-length', b'')
        if length.isdigit() and int(length) > self.max_request_bytes:
            response = JSONResponse(status_code=413, content={
                'detail': f'request body of {int(length)} bytes exceeds the limit of {self.max_request_bytes}'})
            return await response(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message['type'] == 'http.response.start':
                status = message['status']
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            service = getattr(scope['app'].state, 'service', None)
            if service is not None:
                route = getattr(scope.get('route'), 'path', 'unmatched')
                service.metrics.request_latency.labels(scope['method'], route, str(status)).observe(
                    time.perf_counter() - start)


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

    app.add_middleware(LimitsAndMetrics, max_request_bytes=settings.max_request_bytes)
    for module in (health, search, gallery, admin, samples):
        app.include_router(module.router)

    @app.get('/', include_in_schema=False)
    def index():
        return FileResponse(STATIC / 'index.html')

    return app
