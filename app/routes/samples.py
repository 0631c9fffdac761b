"""Sample query images for the web page: a strip of known persons (e.g. the demo's query split) to try with one
click. Off unless AMG_SAMPLE_QUERIES_DIR names a folder; only the listed files are ever served. The folder belongs
to no site: a key scoped to sites is shown none."""
from pathlib import Path
from typing import Dict, List

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel

from reid.datasets import DatasetError, parse_market_name

from ..deps import ScopeDep, StateDep, require_read
from ..schemas import ERRORS

router = APIRouter(prefix='/v1/samples', tags=['samples'], dependencies=[Depends(require_read)],
                   responses={401: ERRORS[401]})  # a key given that the server does not know
IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png'}


class Sample(BaseModel):
    name: str
    url: str
    person_id: int
    camera_id: int


def _listing(folder: Path, limit: int) -> Dict[str, Path]:
    """Up to ``limit`` images of distinct persons, spread over the folder (Market-1501 names carry the ids)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    by_person: Dict[int, Path] = {}
    for p in files:
        try:
            pid, _ = parse_market_name(p.name)
        except DatasetError:  # not a named sample: its person is unknown
            continue
        if pid > 0:
            by_person.setdefault(pid, p)
    chosen = list(by_person.values())
    step = max(1, len(chosen) // max(limit, 1))
    return {p.name: p for p in chosen[::step][:limit]}


@router.get('', response_model=List[Sample])
def list_samples(state: StateDep, scope: ScopeDep):
    """Sample queries with their known person and camera ids (empty when none are configured)."""
    folder = state.settings.sample_queries_dir
    if folder is None or scope is not None:
        return []
    out = []
    for name in _listing(folder, state.settings.sample_queries):
        pid, cam = parse_market_name(name)
        out.append(Sample(name=name, url=f'/v1/samples/{name}', person_id=pid, camera_id=cam))
    return out


@router.get('/{name}', response_class=FileResponse, responses={404: {'description': 'not a listed sample'}})
def sample_image(name: str, state: StateDep, scope: ScopeDep):
    folder = state.settings.sample_queries_dir
    path = _listing(folder, state.settings.sample_queries).get(name) if folder is not None and scope is None \
        else None
    if path is None:
        raise HTTPException(status_code=404, detail=f'no sample named {name!r}')
    return FileResponse(path)
