"""Gallery writes: an upload is acknowledged only after its image file is fsynced and its row, vector and change-log
entry are committed; the vector engine follows the change log (when it is down, the change waits there)."""
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from sqlalchemy.engine import Engine

from storage import crud
from storage import identities as store_identities
from storage.db import GalleryImage, Identity
from storage.engine import EngineUnavailable
from storage.images import ImageStore

from .engines import remove_from_other_models
from .imaging import DecodedImage
from .snapshot import Snapshot
from .vector_feed import VectorFeed

if TYPE_CHECKING:
    from .changelog import ChangeLogFollower

__all__ = ['GalleryWriter', 'write_images', 'RECEIPT_FIELDS']

ERASE_BATCH = 500  # images an erasure removes a transaction (the write lock is held for one batch)
RECEIPT_FIELDS = ('images', 'image_files', 'vectors', 'sightings', 'identities')  # what a removal counts

_logger = logging.getLogger(__name__)


class GalleryWriter:
    def __init__(self, session_factory: Callable, database: Engine, images: ImageStore, feed: VectorFeed,
                 changelog: 'ChangeLogFollower', write_lock: threading.RLock, snapshot: Callable[[], Snapshot],
                 current: Callable[[], Optional[Snapshot]], on_engine_error: Callable[[str], None],
                 index_dir: Path) -> None:
        self.Session = session_factory
        self.database = database  # the content lock (PostgreSQL advisory locks)
        self.images = images
        self.feed = feed
        self.changelog = changelog
        self.write_lock = write_lock
        self.snapshot = snapshot  # the active model (NoModel without one)
        self.current = current
        self.on_engine_error = on_engine_error
        self.index_dir = index_dir  # this replica's saved indexes

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
        return self.remove([image_id])['images'] == 1

    def remove(self, image_ids: Sequence[int]) -> Dict[str, int]:
        """Remove these gallery images (at most crud.IN_CHUNK) with everything that is theirs: rows, tags, every
        model's vectors, their files once no row names them, the sightings and identities left empty; the engine
        and every replica follow the change log, and inactive models' copies are removed too. Holds the write lock
        for one batch: callers removing many call it a batch at a time. Counts of what was removed (a receipt)."""
        receipt = dict.fromkeys(RECEIPT_FIELDS, 0)
        with self.write_lock:
            with self.Session() as s:
                shas = sorted({r.image_sha256 for r in crud.get_images(session=s, image_ids=image_ids).values()})
            if not shas:
                return receipt
            # under the content lock no upload of the same bytes can commit between the count and the unlink
            with self.images.content_lock(shas, self.database):
                with self.Session.begin() as s:
                    done = crud.delete_images(session=s, image_ids=image_ids)
                    s.flush()
                    shared = crud.referenced_contents(session=s, sha256s=[sha for sha, _ in done.files])
                # a crash before the unlinks: the start-up sweep removes the files no row names
                for path in sorted({path for sha, path in done.files if sha not in shared}):
                    if Path(path).is_file():
                        Path(path).unlink(missing_ok=True)
                        receipt['image_files'] += 1
            receipt.update(images=done.images, vectors=done.vectors, sightings=done.sightings,
                           identities=done.identities)
            snap = self.current()
            self._follow(snap)
            self._remove_from_other_models(snap, [int(i) for i in image_ids])
        return receipt

    def erase_person(self, person_id: int, sites: Optional[Sequence[str]] = None) -> Optional[Dict[str, int]]:
        """Erasure of a person: every gallery image of ``person_id`` (of these sites, unless None) removed
        (:meth:`remove`, a batch at a time) with the sightings and identities left empty; the receipt, or None when
        the person has no image."""
        return self._erase(lambda s: crud.person_image_ids(session=s, person_id=person_id, limit=ERASE_BATCH,
                                                           sites=sites))

    def erase_identity(self, identity_id: int) -> Optional[Dict[str, int]]:
        """Erasure of an identity: the images of all its sightings, the sightings and the identity itself (also
        one enrolled by name); the receipt, or None when there is no such identity."""
        with self.Session() as s:
            if store_identities.get_identity(session=s, identity_id=identity_id) is None:
                return None
        def batch(s) -> List[int]:
            return crud.identity_image_ids(session=s, identity_id=identity_id, limit=ERASE_BATCH)
        receipt = dict.fromkeys(RECEIPT_FIELDS, 0)
        while True:
            for k, v in (self._erase(batch) or {}).items():
                receipt[k] += v
            with self.Session.begin() as s:
                # locked: the linker cannot link a new sighting to it now (it finds it gone afterwards)
                identity = s.get(Identity, identity_id, with_for_update=True)
                if identity is None:  # removed with its last sighting
                    return receipt
                if batch(s):  # a sighting was linked to it meanwhile: erased too
                    continue
                store_identities.delete_identity(session=s, identity_id=identity_id)  # one without sightings
                receipt['identities'] += 1
                return receipt

    def _erase(self, next_batch: Callable[[Any], List[int]]) -> Optional[Dict[str, int]]:
        receipt: Optional[Dict[str, int]] = None
        while True:
            with self.Session() as s:
                ids = next_batch(s)
            if not ids:
                return receipt
            done = self.remove(ids)
            receipt = {k: (receipt or {}).get(k, 0) + v for k, v in done.items()}

    def _remove_from_other_models(self, snap: Optional[Snapshot], ids: List[int]) -> None:
        if snap is None:
            return
        try:
            remove_from_other_models(snap.engine, self.index_dir, snap.model_id, ids)
        except EngineUnavailable as e:  # the previous model's collection: removed at the next publish at latest
            _logger.warning("vector engine unavailable: inactive models' copies of %d image(s) remain: %s",
                            len(ids), e)


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
