"""Gallery writes: an upload is acknowledged only after its image file is fsynced and its row, vector and change-log
entry are committed; the vector engine follows the change log (when it is down, the change waits there)."""
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from sqlalchemy.engine import Engine

from storage import crud
from storage.db import GalleryImage
from storage.engine import EngineUnavailable
from storage.images import ImageStore

from .imaging import DecodedImage
from .snapshot import Snapshot
from .vector_feed import VectorFeed

if TYPE_CHECKING:
    from .changelog import ChangeLogFollower

__all__ = ['GalleryWriter', 'write_images']

_logger = logging.getLogger(__name__)


class GalleryWriter:
    def __init__(self, session_factory: Callable, database: Engine, images: ImageStore, feed: VectorFeed,
                 changelog: 'ChangeLogFollower', write_lock: threading.RLock, snapshot: Callable[[], Snapshot],
                 current: Callable[[], Optional[Snapshot]], on_engine_error: Callable[[str], None]) -> None:
        self.Session = session_factory
        self.database = database  # the content lock (PostgreSQL advisory locks)
        self.images = images
        self.feed = feed
        self.changelog = changelog
        self.write_lock = write_lock
        self.snapshot = snapshot  # the active model (NoModel without one)
        self.current = current
        self.on_engine_error = on_engine_error

    def add(self, items: Sequence[DecodedImage], metas: Sequence[Dict[str, Any]],
            sighting: Optional[Dict[str, Any]] = None) -> List[GalleryImage]:
        """Store ``items`` with their ``metas`` (GalleryImage columns). ``sighting``: the columns of one new sighting
        (crud.add_sighting) that all of them make up, written in the same transaction; without it each image is
        a sighting of one."""
        self.snapshot()  # no model: NoModel before anything is written
        with self.write_lock:
            snap = self.snapshot()  # the model may have been swapped while we waited
            xb = self.feed.embed_for_storage(snap, [item.image for item in items])
            rows = write_images(self.Session, self.database, self.images, items, metas, sighting, xb, snap.model_id)
            # committed: acknowledged. The engine follows the change log (a crash here: reconcile() repairs it)
            self._follow(snap)
        return rows

    def _follow(self, snap) -> None:
        try:
            self.changelog.sync(snap)
        except EngineUnavailable as e:  # committed all the same: the maintenance loop applies it when it is back
            self.on_engine_error(str(e))
            _logger.warning('vector engine unavailable, the change waits in the change log: %s', e)

    def delete(self, image_id: int) -> bool:
        with self.write_lock:
            with self.Session() as s:
                row = crud.get_image(session=s, image_id=image_id)
                if row is None:
                    return False
                sha = row.image_sha256
            # under the content lock no upload of the same bytes can commit between the count and the unlink
            with self.images.content_lock([sha], self.database):
                with self.Session.begin() as s:
                    row = crud.get_image(session=s, image_id=image_id)
                    if row is None:  # deleted by another replica meanwhile
                        return False
                    path = row.image_path
                    crud.delete_image(session=s, image_id=image_id)
                    s.flush()
                    shared = crud.count_by_sha(session=s, sha256=sha) > 0
                if not shared:
                    Path(path).unlink(missing_ok=True)  # a crash before this: the start-up sweep removes it
            self._follow(self.current())
        return True


def write_images(Session: Callable, database: Engine, images: ImageStore, items: Sequence[DecodedImage],
                 metas: Sequence[Dict[str, Any]], sighting: Optional[Dict[str, Any]] = None,
                 vectors: Optional[Any] = None, model_id: Optional[int] = None) -> List[GalleryImage]:
    """Image files (fsynced), then their rows, ``sighting`` (its columns) and change-log entries in one
    transaction; with ``vectors`` by ``model_id`` stored with them. Without vectors (a job's worker process, which
    holds no model) the service embeds them when it follows the change log, as it does another replica's rows."""
    stored = [images.put(item.data, item.ext) for item in items]
    with images.content_lock([sha for sha, _ in stored], database):
        for item, (_, path) in zip(items, stored):
            if not path.exists():  # another replica deleted the last row of these bytes meanwhile
                images.put(item.data, item.ext)
        with Session.begin() as s:
            group = None if sighting is None else crud.add_sighting(session=s, **sighting)
            together = {} if group is None else {'sighting_id': group.id}
            rows = crud.add_images(session=s, vectors=vectors, model_id=model_id, rows=[
                dict(meta, source_name=item.filename, image_sha256=sha, image_path=str(path),
                     model_version=model_id, **together)
                for item, meta, (sha, path) in zip(items, metas, stored)])
            if group is not None:
                crud.count_sighting(session=s, sighting=group)
    return rows
