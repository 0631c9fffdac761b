"""The service's state: database, image store, FAISS index and the embedder, and the rules that keep them agreeing.

The database is the source of truth; the FAISS index is a cache of the active model's vectors, saved every few
seconds and reconciled at start-up (vectors without rows are removed, rows without vectors re-embedded from the
stored images), so a crash at any moment loses no acknowledged upload. An upload is acknowledged only after its
image file is fsynced and its row committed.
"""
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from models.checkpoints import load_model, read_metadata
from models.embedder import Embedder
from models.export import export_onnx, file_sha256
from models.onnx_backend import onnx_path_for, onnx_status
from storage import crud
from storage.db import GalleryImage, ModelVersion, make_engine, make_sessionmaker
from storage.images import ImageStore
from storage.index import VectorIndex

from .batching import DynamicBatcher
from .imaging import DecodedImage, load_stored
from .metrics import Metrics
from .settings import Settings

__all__ = ['ServiceState', 'Snapshot', 'NoModel', 'register_checkpoint', 'ensure_onnx']

_logger = logging.getLogger(__name__)


class NoModel(RuntimeError):
    """No model is active yet."""


@dataclass(frozen=True)
class Snapshot:
    """What one request uses: a model and the index of its vectors, swapped together on activation."""
    embedder: Embedder
    index: VectorIndex
    model_id: int
    model_name: str
    min_score: float


def register_checkpoint(session, path: str, name: str = '', info: Optional[Dict] = None) -> ModelVersion:
    """A model row for a checkpoint file, with its calibrated threshold and complexity from the file's record."""
    _, extra = read_metadata(path)
    return crud.add_model(session=session, path=str(Path(path).resolve()), name=name, sha256=file_sha256(path),
                          min_score=extra.get('min_score'), info=dict(info or {}, **{
                              k: extra[k] for k in ('complexity', 'metrics', 'pruned_from') if k in extra}))


def ensure_onnx(checkpoint: str) -> bool:
    """Export ``checkpoint`` to ONNX beside it unless a fresh export exists; False (logged) when export fails."""
    if onnx_status(onnx_path_for(checkpoint), checkpoint)[0]:
        return True
    try:
        export_onnx(load_model(checkpoint), onnx_path_for(checkpoint), checkpoint_sha256=file_sha256(checkpoint))
        return True
    except Exception:  # the service then runs eager torch
        _logger.exception('ONNX export of %s failed; serving with eager torch', checkpoint)
        return False


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.database_url)
        self.Session = make_sessionmaker(self.engine)
        self.images = ImageStore(self.data_dir / 'images')
        self.metrics = Metrics()
        self.write_lock = threading.RLock()  # uploads, deletes and the model swap
        self._snapshot: Optional[Snapshot] = None
        self.activation: Dict[str, Any] = {'state': 'idle'}
        self._stop = threading.Event()
        self._saver: Optional[threading.Thread] = None
        self.batcher = DynamicBatcher(max_batch=settings.embed_batch_size, max_wait_ms=settings.batch_wait_ms,
                                      on_batch=self.metrics.embed_batch.observe) if settings.batch_wait_ms > 0 else None

    # ---- life cycle ------------------------------------------------------------------------------------------
    def startup(self) -> None:
        with self.Session.begin() as s:
            n = crud.interrupt_running_jobs(session=s)
            if n:
                _logger.warning('%d job(s) were running when the service stopped: marked interrupted', n)
            if self.settings.model_path is not None:
                self._register_configured_model(s)
            active = crud.active_model(session=s)
        if active is not None:
            self._snapshot = self._open(active)
            self.reconcile()
        self._saver = threading.Thread(target=self._save_loop, name='index-saver', daemon=True)
        self._saver.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._saver is not None:
            self._saver.join(timeout=60)  # no faiss call may be running in a thread while the interpreter exits
        self.save_index()

    def _register_configured_model(self, s) -> None:
        path = str(Path(self.settings.model_path).resolve())
        if not Path(path).is_file():
            raise FileNotFoundError(f'AMG_MODEL_PATH does not exist: {path}')
        existing = next((m for m in crud.list_models(session=s) if m.path == path), None)
        if existing is None:
            existing = register_checkpoint(s, path, name=Path(path).parent.name)
        if crud.active_model(session=s) is None:
            crud.activate_model(session=s, model_id=existing.id)


    def _index_path(self, model_id: int) -> Path:
        return self.data_dir / f'index-model{model_id}.faiss'

    def _open(self, model: ModelVersion) -> Snapshot:
        embedder = Embedder(model.path, device=self.settings.device, batch_size=self.settings.embed_batch_size,
                            backend=self.settings.backend, threads=self.settings.onnx_threads)
        self.metrics.backend.clear()
        self.metrics.backend.labels(backend=embedder.backend).set(1)
        kind = 'exact' if self.settings.index_kind == 'auto' else self.settings.index_kind
        index = VectorIndex.load(self._index_path(model.id), embedder.dim, kind, self.settings.nprobe)
        min_score = model.min_score if model.min_score is not None else self.settings.default_min_score
        return Snapshot(embedder, index, model.id, model.name, float(min_score))

    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            raise NoModel('no model is loaded: set AMG_MODEL_PATH to a checkpoint and restart, or start a train job '
                          '(POST /v1/admin/jobs) and activate its model (POST /v1/admin/models/{id}/activate)')
        return snap

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    # ---- embedding -------------------------------------------------------------------------------------------
    def embed_queries(self, embedder: Embedder, images: Sequence) -> np.ndarray:
        """Query embeddings; concurrent queries are batched together when dynamic batching is on."""
        if self.batcher is None:
            return self.embed(embedder, images)
        return self.batcher.embed(embedder, images)

    def embed(self, embedder: Embedder, images: Sequence) -> np.ndarray:
        bs = embedder.batch_size
        for i in range(0, len(images), bs):
            self.metrics.embed_batch.observe(min(bs, len(images) - i))
        return embedder(list(images))

    def _fill(self, snap: Snapshot, rows: Sequence[GalleryImage], index: VectorIndex) -> List[int]:
        """Embed rows from their stored images into ``index``; returns the ids done (missing files are logged)."""
        done = []
        bs = max(1, snap.embedder.batch_size)
        for start in range(0, len(rows), bs):
            chunk, pics = [], []
            for row in rows[start:start + bs]:
                try:
                    pics.append(load_stored(self.images.resolve(row.image_path)))
                    chunk.append(row.id)
                except (OSError, ValueError) as e:
                    _logger.error('gallery image %d cannot be re-embedded (%s): left without a vector', row.id, e)
            if chunk:
                index.add(np.asarray(chunk), self.embed(snap.embedder, pics))
                done += chunk
        return done

    # ---- consistency -----------------------------------------------------------------------------------------
    def reconcile(self) -> Dict[str, int]:
        """Make the index hold exactly one vector, from the active model, per gallery row."""
        snap = self.snapshot()
        with self.write_lock:
            with self.Session() as s:
                db_ids = set(crud.all_image_ids(session=s))
                stray = [int(i) for i in snap.index.ids() if int(i) not in db_ids]
                snap.index.remove(stray)
                missing = crud.images_needing_vectors(session=s, indexed_ids=snap.index.ids(),
                                                      model_id=snap.model_id)
            done = self._fill(snap, missing, snap.index)
            with self.Session.begin() as s:
                crud.set_model_version(session=s, image_ids=done, model_id=snap.model_id)
            self._maybe_go_approximate(snap)
            self.save_index()
        if stray or missing:
            _logger.info('reconciled: removed %d stray vectors, embedded %d rows', len(stray), len(done))
        return dict(removed=len(stray), embedded=len(done))

    def consistent(self) -> bool:
        snap = self._snapshot
        if snap is None:
            return False
        with self.Session() as s:
            return set(crud.all_image_ids(session=s)) == set(int(i) for i in snap.index.ids())

    def _maybe_go_approximate(self, snap: Snapshot) -> None:
        if self.settings.index_kind == 'auto' and snap.index.kind == 'exact' \
                and snap.index.ntotal >= self.settings.approx_threshold:
            snap.index.rebuild('approx')

    def save_index(self) -> None:
        snap = self._snapshot
        if snap is not None and snap.index.dirty:
            snap.index.save(self._index_path(snap.model_id))

    def _save_loop(self) -> None:
        while not self._stop.wait(self.settings.index_save_seconds):
            try:
                self.save_index()
            except Exception:  # keep saving later; a failed save only means more re-embedding after a crash
                _logger.exception('saving the index failed')

    # ---- gallery ---------------------------------------------------------------------------------------------
    def add_gallery(self, items: Sequence[DecodedImage], metas: Sequence[Dict[str, Any]]) -> List[GalleryImage]:
        snap = self.snapshot()
        with self.write_lock:
            snap = self.snapshot()  # the model may have been swapped while we waited
            stored = [self.images.put(item.data, item.ext) for item in items]
            xb = self.embed(snap.embedder, [item.image for item in items])
            with self.Session.begin() as s:
                rows = crud.add_images(session=s, rows=[
                    dict(meta, source_name=item.filename, image_sha256=sha, image_path=str(path),
                         model_version=snap.model_id)
                    for item, meta, (sha, path) in zip(items, metas, stored)])
            # committed: acknowledged. The vectors follow; a crash here is repaired by reconcile()
            snap.index.add(np.asarray([r.id for r in rows]), xb)
            self.metrics.gallery_size.set(snap.index.ntotal)
        return rows

    def delete_image(self, image_id: int) -> bool:
        with self.write_lock:
            with self.Session.begin() as s:
                row = crud.get_image(session=s, image_id=image_id)
                if row is None:
                    return False
                path, sha = row.image_path, row.image_sha256
                crud.delete_image(session=s, image_id=image_id)
                s.flush()
                shared = crud.count_by_sha(session=s, sha256=sha) > 0
            if self._snapshot is not None:
                self._snapshot.index.remove([image_id])
                self.metrics.gallery_size.set(self._snapshot.index.ntotal)
            if not shared:
                Path(path).unlink(missing_ok=True)
        return True

    # ---- models ----------------------------------------------------------------------------------------------
    def activate(self, model_id: int) -> None:
        """Switch models in the background: the old model serves until the new index is complete, then both swap
        at once (and the database records it in the same step)."""
        if self.activation.get('state') == 'running':
            raise RuntimeError(f'model {self.activation.get("model_id")} is being activated already')
        with self.Session() as s:
            model = crud.get_model(session=s, model_id=model_id)
            if model is None:
                raise KeyError(model_id)
        self.activation = dict(state='running', model_id=model_id, done=0, total=0, error=None)
        threading.Thread(target=self._activate, args=(model,), name=f'activate-{model_id}', daemon=True).start()

    def _activate(self, model: ModelVersion) -> None:
        try:
            if self.settings.backend != 'torch':
                ensure_onnx(model.path)  # here, in the background, never on a request
            new = self._open(model)
            new.index.remove(new.index.ids())  # start clean: any stale file for this model is rebuilt
            with self.Session() as s:
                rows = crud.all_images(session=s)
            self.activation['total'] = len(rows)
            self._fill(new, rows, new.index)  # old model keeps serving meanwhile
            with self.write_lock:  # catch up with uploads and deletes made during the re-embedding
                with self.Session() as s:
                    db_ids = set(crud.all_image_ids(session=s))
                    new.index.remove([int(i) for i in new.index.ids() if int(i) not in db_ids])
                    indexed = set(int(i) for i in new.index.ids())
                    late = [r for r in crud.all_images(session=s) if r.id not in indexed]
                self._fill(new, late, new.index)
                self._maybe_go_approximate(new)
                new.index.save(self._index_path(model.id))
                with self.Session.begin() as s:
                    crud.activate_model(session=s, model_id=model.id)
                self._snapshot = new
                self.metrics.gallery_size.set(new.index.ntotal)
            self.activation.update(state='done', done=len(rows) + len(late))
            _logger.info('model %d active (%d gallery vectors)', model.id, new.index.ntotal)
        except Exception as e:  # report through the API; the old model keeps serving
            _logger.exception('activating model %d failed', model.id)
            self.activation.update(state='failed', error=str(e))
