"""Adapt jobs (``POST /v1/admin/jobs`` kind ``adapt``, ``amg-reid adapt``): the served model adapted to the
gallery's own unlabelled crops (reid.adapt), the video sightings its tracks.

The crops are linked (or copied) into the run's folder first, so that a crop deleted while the job runs (by its
uploader, an erasure) does not fail it half-way; the run and its model are kept as any job's."""
import logging
import os
import shutil
from pathlib import Path
from typing import List, Optional

from sqlalchemy import func, select

from reid.config import AdaptConfig
from reid.datasets import UnlabelledCrop
from reid.progress import ProgressCallback, RunSummary
from storage.db import GalleryImage, Sighting
from storage.images import ImageStore

__all__ = ['gallery_crops', 'count_gallery_crops', 'run_adapt', 'NoCrops']

_logger = logging.getLogger(__name__)


class NoCrops(ValueError):
    """The gallery has no crops the options select."""


def _selected(q, cfg: AdaptConfig):
    if cfg.cameras:
        q = q.where(GalleryImage.camera_id.in_(cfg.cameras))
    if cfg.since is not None:
        q = q.where(GalleryImage.timestamp >= cfg.since)
    if cfg.until is not None:
        q = q.where(GalleryImage.timestamp < cfg.until)
    return q


def count_gallery_crops(session, cfg: AdaptConfig) -> int:
    return session.scalar(_selected(select(func.count()).select_from(GalleryImage), cfg))


def gallery_crops(session, store: ImageStore, cfg: AdaptConfig) -> List[UnlabelledCrop]:
    """The gallery's crops that ``cfg`` selects (cameras, a time window), each video sighting a track spanning its
    first to last time; uploaded crops (a sighting of one) have no track."""
    q = _selected(select(GalleryImage.image_path, GalleryImage.camera_id, GalleryImage.sighting_id, Sighting.video,
                         Sighting.first_time, Sighting.last_time)
                  .outerjoin(Sighting, Sighting.id == GalleryImage.sighting_id).order_by(GalleryImage.id), cfg)
    crops = []
    for path, camera, sighting, video, first, last in session.execute(q).yield_per(1000):
        tracked = sighting is not None and bool(video)
        crops.append(UnlabelledCrop(
            str(store.resolve(path)), int(camera), sighting if tracked else None,
            first.timestamp() if tracked and first is not None else None,
            last.timestamp() if tracked and last is not None else None))
    return crops


def _snapshot(crops: List[UnlabelledCrop], folder: Path) -> List[UnlabelledCrop]:
    """The crops hard-linked (copied across file systems) into ``folder``, named by position."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, c in enumerate(crops):
        target = folder / f'{i:07d}{Path(c.path).suffix}'
        if not target.exists():
            try:
                os.link(c.path, target)
            except FileNotFoundError:  # deleted since it was listed
                continue
            except OSError:
                shutil.copyfile(c.path, target)
        out.append(UnlabelledCrop(str(target), c.camid, c.track, c.start, c.end))
    return out


def run_adapt(cfg: AdaptConfig, Session=None, store: Optional[ImageStore] = None, progress: bool = False,
              on_progress: Optional[ProgressCallback] = None) -> RunSummary:
    """One adaptation: the crops under ``cfg.data_dir``, or, without it, the gallery's (``Session`` and ``store``)."""
    from reid.adapt import adapt  # torch: the worker's and the CLI's, not the API process's
    crops = None
    if cfg.data_dir is None:
        if Session is None or store is None:
            raise ValueError('adapting to the gallery needs the service\'s database and image store')
        with Session() as s:
            listed = gallery_crops(s, store, cfg)
        if not listed:
            raise NoCrops('the gallery has no crops for these options (cameras, since, until)')
        crops = _snapshot(listed, cfg.run_dir / 'crops')
        _logger.info('adapting to %d gallery crops (%d tracks)', len(crops),
                     len({c.track for c in crops if c.track is not None}))
    return adapt(cfg, crops, progress=progress, on_progress=on_progress)
