"""The FastAPI application: ``create_app(settings)``; ``amg-reid serve`` runs it with uvicorn."""
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from .jobs import JobManager
from .routes import admin, gallery, health, search
from .settings import Settings
from .state import ServiceState

__all__ = ['create_app']

_logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / 'static'


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

    @app.middleware('http')
    async def limits_and_metrics(request: Request, call_next):
        length = request.headers.get('content-length')
        if length is not None and length.isdigit() and int(length) > settings.max_request_bytes:
            return JSONResponse(status_code=413, content={
                'detail': f'request body of {length} bytes exceeds the limit of {settings.max_request_bytes}'})
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get('route')
        service = getattr(request.app.state, 'service', None)
        if service is not None:
            service.metrics.request_latency.labels(request.method, getattr(route, 'path', 'unmatched'),
                                                   str(response.status_code)).observe(time.perf_counter() - start)
        return response

    for module in (health, search, gallery, admin):
        app.include_router(module.router)

    @app.get('/', include_in_schema=False)
    def index():
        return FileResponse(STATIC / 'index.html')

    return app
