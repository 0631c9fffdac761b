"""Browser-facing protections: security headers on every answer, and no writes from other web sites.

A multipart POST from any web page skips the CORS preflight, so CORS alone cannot stop a page a user visits from
writing to a service on their network: a state-changing request whose ``Origin`` is neither this server nor one of
``AMG_CORS_ORIGINS`` is refused (403). Clients that are not browsers send no ``Origin`` and are unaffected."""
from typing import Iterable
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ['BrowserGuard', 'PAGE_CSP']

# the page loads its own script, style and images only; query previews are blob: URLs
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
# /docs and /redoc are FastAPI's pages (inline script, CDN assets): they only get what cannot break them
DOCS_PATHS = ('/docs', '/redoc')
WRITE_METHODS = {'POST', 'PUT', 'PATCH', 'DELETE'}


class BrowserGuard:
    def __init__(self, app: ASGIApp, cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {o.rstrip('/') for o in cors_origins}

    def _foreign(self, headers: Headers) -> bool:
        origin = headers.get('origin')
        if origin is None or origin.rstrip('/') in self.allowed:
            return False
        return urlsplit(origin).netloc != headers.get('host', '')

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        if scope['method'] in WRITE_METHODS and self._foreign(Headers(scope=scope)):
            return await JSONResponse(status_code=403, content={
                'detail': 'writes from another web site are refused (allowed origins: AMG_CORS_ORIGINS)'})(
                scope, receive, send)
        docs = scope['path'].startswith(DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message['type'] == 'http.response.start':
                headers = MutableHeaders(scope=message)
                headers.setdefault('X-Content-Type-Options', 'nosniff')
                headers.setdefault('Referrer-Policy', 'no-referrer')
                headers.setdefault('X-Frame-Options', 'DENY')
                headers.setdefault('Content-Security-Policy', "frame-ancestors 'none'" if docs else PAGE_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)
