"""Parsing of multipart form fields, with errors that say which field and why (400)."""
import asyncio
from datetime import datetime
from functools import partial
from typing import Any, Callable, List, Literal, Optional

import anyio
from fastapi import HTTPException, Request, UploadFile
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from storage.db import TAG_CHARS
from storage.engine import MAX_TAGS

from .deps import MAX_ID
from .imaging import (DecodedImage, ImageRejected, decode_probed, decode_request, has_control_characters, probe_request,
                      request_pixels)
from .settings import Settings


class SearchForm(BaseModel):
    """The fields of ``POST /v1/search``. One form model, not ten ``Form()`` parameters: FastAPI resolves each
    parameter on its own, and ten of them cost ~0.2 ms a request."""
    images: List[UploadFile] = Field(description='one or more query images (batch query)')
    k: Optional[int] = Field(None, ge=1, le=100, description='matches per query (default from settings)')
    min_score: Optional[float] = Field(None, ge=-1, le=1, description="below this score (the answers' "
                                       "score_kind: a probability, or a cosine for models without a calibration): "
                                       "no match (default: the model's calibrated threshold)")
    camera_id: Optional[str] = Field(None, description='only gallery images from these cameras (comma list)')
    person_id: Optional[int] = Field(None, ge=0, le=MAX_ID, description='only this person')
    after: Optional[str] = Field(None, description='only gallery images taken at or after (ISO 8601)')
    before: Optional[str] = Field(None, description='only gallery images taken at or before (ISO 8601)')
    tags: Optional[str] = Field(None, description='gallery images having all these tags (comma list)')
    query_camera_id: Optional[str] = Field(None, description="the queries' camera (one, or one per image)")
    exclude_same_camera: bool = Field(False, description="skip gallery images from the query's camera")
    group: bool = Field(False, description='the images are crops of one person (a multi-shot query): their parts '
                                           'are pooled into one query, and the answer is one ranked list')
    visibility: bool = Field(True, description='a model with the visibility head: score on the parts both images '
                             'show (false: every part counts alike); no effect on other models')
    group_by: Optional[Literal['sighting']] = Field(None, description='sighting: one match per sighting (its '
                                                    "best-matching crop, with the sighting's camera and time range)")


OFF_LOOP_FORM_BYTES = 256 * 1024  # a multipart body larger than this is parsed in a worker thread


class OffLoopFormRoute(APIRoute):
    """A route whose large multipart bodies are parsed in a worker thread, not in the event loop: the loop only
    moves the body's chunks, so ``/healthz`` and the small requests keep answering while big uploads (or floods of
    requests refused later, by the pixel limit) are parsed. Small bodies parse in the loop, where a thread hop
    would cost more than the parse. Same parser and limits as Starlette's own ``request.form()``."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def parse_then_handle(request: Request):
            length = request.headers.get('content-length', '')
            if request.headers.get('content-type', '').startswith('multipart/form-data') and \
                    (not length.isdigit() or int(length) > OFF_LOOP_FORM_BYTES):
                request._form = await _parse_multipart_off_loop(request)  # request.form() then returns it
            return await handler(request)
        return parse_then_handle


async def _parse_multipart_off_loop(request: Request) -> FormData:
    # the whole body first (at most AMG_MAX_REQUEST_BYTES, enforced on the stream), so a slow client holds no thread
    body = [chunk async for chunk in request.stream()]

    async def replay():
        for chunk in body:
            yield chunk

    def parse() -> FormData:  # a loop of the worker's own: the parser writes large parts to its spool files
        return asyncio.run(MultiPartParser(request.headers, replay()).parse())

    try:
        return await anyio.to_thread.run_sync(parse)
    except MultiPartException as e:
        raise HTTPException(status_code=400, detail=e.message) from None


def bad(field: str, message: str) -> HTTPException:
    # 400, not 422: FastAPI documents 422 with its own error list; these messages are plain strings
    return HTTPException(status_code=400, detail=f'{field}: {message}')


def int_list(field: str, value: Optional[str]) -> Optional[List[int]]:
    """'1,2, 3' -> [1, 2, 3]; None or '' -> None."""
    if value is None or not value.strip():
        return None
    try:
        values = [int(v) for v in value.split(',') if v.strip()]
    except ValueError:
        raise bad(field, f'expected integers separated by commas, got {value!r}') from None
    if any(not -MAX_ID <= v <= MAX_ID for v in values):
        raise bad(field, f'values must lie within +-{MAX_ID}')
    return values




def str_list(value: Optional[str], field: str = 'tags') -> Optional[List[str]]:
    if value is None or not value.strip():
        return None
    values = [v.strip() for v in value.split(',') if v.strip()]
    if len(values) > MAX_TAGS or any(len(v) > TAG_CHARS for v in values):  # labels, not documents
        raise bad(field, f'at most {MAX_TAGS} values of at most {TAG_CHARS} characters each')
    if any(has_control_characters(v) for v in values):
        raise bad(field, 'control characters (tab, newline, NUL, ...) are not allowed in tags')
    return values


def when(field: str, value: Optional[str]) -> Optional[datetime]:
    if value is None or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace('Z', '+00:00'))
    except ValueError:
        raise bad(field, f'expected an ISO 8601 date-time, got {value!r}') from None
    if parsed.tzinfo is not None:  # stored as naive UTC
        try:
            parsed = (parsed - parsed.utcoffset()).replace(tzinfo=None)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
            raise bad(field, f'date-time out of range in UTC: {value!r}') from None
    return parsed


def per_file(field: str, values: Optional[List[int]], n: int, default: Optional[int] = None) -> List[int]:
    """One value for every file, or one value for all of them."""
    if values is None:
        if default is None:
            raise bad(field, 'required')
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise bad(field, f'give one value, or one per file ({n}); got {len(values)}')
    return values


# A request this small decodes in the event loop (~0.3 ms for a 128x64 JPEG, prepared): handing it to a worker
# thread and back cost more than the work, ~0.3-0.5 ms a request on 2 cores (docs/benchmarks.md 5b).
INLINE_DECODE_BYTES, INLINE_DECODE_PIXELS = 64 * 1024, 256 * 256


async def read_images(files: List[UploadFile], settings: Settings, limiter: anyio.CapacityLimiter,
                      prepare: Optional[Callable[[Any], Any]] = None, inline: bool = False) -> List[DecodedImage]:
    """Decode every upload first: one bad file, or too many pixels in all, rejects the request before anything is
    decoded or written. In a worker thread (at most ``settings.decode_threads`` requests at once; the others wait
    without holding a thread), or, when ``inline`` and the request is small (:data:`INLINE_DECODE_PIXELS`), right
    here in the event loop. ``prepare``: see :func:`app.imaging.decode_probed`."""
    if not files:
        raise bad('images', 'at least one image file is required')
    if len(files) > settings.max_files_per_request:
        raise HTTPException(status_code=413, detail=f'at most {settings.max_files_per_request} files per request')
    raw = [(await f.read(settings.max_upload_bytes + 1), f.filename or 'upload') for f in files]
    limits = (settings.max_upload_bytes, settings.max_pixels, settings.max_request_pixels)
    try:
        if inline and sum(len(data) for data, _ in raw) <= INLINE_DECODE_BYTES:
            probed = probe_request(raw, *limits)  # headers of a few kB: cheap
            if request_pixels(probed) <= INLINE_DECODE_PIXELS:
                return decode_probed(probed, prepare)
            return await anyio.to_thread.run_sync(partial(decode_probed, probed, prepare), limiter=limiter)
        return await anyio.to_thread.run_sync(partial(decode_request, raw, *limits, prepare), limiter=limiter)
    except ImageRejected as e:
        raise HTTPException(status_code=e.status, detail=str(e)) from None
