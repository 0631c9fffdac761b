"""Gallery writes: an upload is acknowledged only after its image file is fsynced and its row, vector and change-log
entry are committed; the vector engine follows the change log (when it is down, the change waits there)."""
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from storage import crud
from storage.db import GalleryImage
from storage.engine import EngineUnavailable

from .imaging import DecodedImage

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ['GalleryWriter']

_logger = logging.getLogger(__name__)


class GalleryWriter:
    def __init__(self, service: 'ServiceState') -> None:
        self.service = service

    def add(self, items: Sequence[DecodedImage], metas: Sequence[Dict[str, Any]]) -> List[GalleryImage]:
        service = self.service
        service.snapshot()  # no model: NoModel before anything is written
        with service.write_lock:
            snap = service.snapshot()  # the model may have been swapped while we waited
            stored = [service.images.put(item.data, item.ext) for item in items]
            xb = service.embed_for_storage(snap.embedder, [item.image for item in items])
            with service.images.content_lock([sha for sha, _ in stored], service.engine):
                for item, (_, path) in zip(items, stored):
                    if not path.exists():  # another replica deleted the last row of these bytes meanwhile
                        service.images.put(item.data, item.ext)
                with service.Session.begin() as s:
                    rows = crud.add_images(session=s, vectors=xb, model_id=snap.model_id, rows=[
                        dict(meta, source_name=item.filename, image_sha256=sha, image_path=str(path),
                             model_version=snap.model_id)
                        for item, meta, (sha, path) in zip(items, metas, stored)])
            # committed: acknowledged. The engine follows the change log (a crash here: reconcile() repairs it)
            self._follow(snap)
        return rows

    def _follow(self, snap) -> None:
        try:
            self.service.changelog.sync(snap)
        except EngineUnavailable as e:  # committed all the same: the maintenance loop applies it when it is back
            self.service.engine_error = str(e)
            _logger.warning('vector engine unavailable, the change waits in the change log: %s', e)

    def delete(self, image_id: int) -> bool:
        service = self.service
        with service.write_lock:
            with service.Session() as s:
                row = crud.get_image(session=s, image_id=image_id)
                if row is None:
                    return False
                sha = row.image_sha256
            # under the content lock no upload of the same bytes can commit between the count and the unlink
            with service.images.content_lock([sha], service.engine):
                with service.Session.begin() as s:
                    row = crud.get_image(session=s, image_id=image_id)
                    if row is None:  # deleted by another replica meanwhile
                        return False
                    path = row.image_path
                    crud.delete_image(session=s, image_id=image_id)
                    s.flush()
                    shared = crud.count_by_sha(session=s, sha256=sha) > 0
                if not shared:
                    Path(path).unlink(missing_ok=True)  # a crash before this: the start-up sweep removes it
            self._follow(service.current)
        return True
