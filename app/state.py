"""The service's state: database, image store, FAISS index and the embedder, and the rules that keep them agreeing.

The database is the source of truth: gallery rows, their vectors (float16, per model) and a change log. The FAISS
index is a cache of the active model's vectors that follows the change log (this process's writes and other
replicas'), is saved every few seconds and is reconciled at start-up (vectors without rows removed, rows without
vectors read back from the database or re-embedded from the stored images), so a crash at any moment loses no
acknowledged upload. An upload is acknowledged only after its image file is fsynced and its row, vector and log
entry are committed.
"""
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from models.checkpoints import load_model, read_metadata
from models.embedder import Backend, Embedder
from models.export import export_onnx, file_sha256
from models.imaging import open_image
from models.onnx_backend import onnx_path_for, onnx_status
from storage import crud
from storage.db import GalleryImage, ModelVersion, make_engine, make_sessionmaker
from storage.images import ImageStore
from storage.index import MIN_TRAIN, IndexKind, VectorIndex

from .batching import ModelThread
from .imaging import DecodedImage
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


def _as_stored(vectors: np.ndarray) -> np.ndarray:
    """Vectors as the database keeps them (float16), so every index holds the same numbers."""
    return np.asarray(vectors, dtype=np.float16).astype(np.float32)


def _search_each(index: VectorIndex, xq: np.ndarray, k: int, allowed: Sequence[Optional[np.ndarray]]):
    if all(a is None for a in allowed):
        D, I = index.search(xq, k)
        return [(D[i], I[i]) for i in range(len(xq))]
    empty = (np.zeros(0, np.float32), np.zeros(0, np.int64))
    out = []
    for i, ids in enumerate(allowed):
        if ids is not None and len(ids) == 0:
            out.append(empty)
        else:
            D, I = index.search(xq[i:i + 1], k, ids)
            out.append((D[0], I[0]))
    return out


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.database_url)
        self.Session = make_sessionmaker(self.engine)
        self.images = ImageStore(self.data_dir / 'images')
        self.index_dir = Path(settings.index_dir or self.data_dir).resolve()  # per replica
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.write_lock = threading.RLock()  # uploads, deletes and the model swap
        self._snapshot: Optional[Snapshot] = None
        self.activation: Dict[str, Any] = {'state': 'idle'}
        self.index_build: Dict[str, Any] = {'state': 'idle'}
        self._stop = threading.Event()
        self._saver: Optional[threading.Thread] = None
        self.model_thread = ModelThread(max_batch=settings.embed_batch_size, max_wait_ms=settings.batch_wait_ms,
                                        merge=settings.batch_wait_ms > 0, on_batch=self.metrics.embed_batch.observe)

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
        self._saver = threading.Thread(target=self._maintenance_loop, name='index-maintenance', daemon=True)
        self._saver.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._saver is not None:
            self._saver.join(timeout=60)  # no faiss call may be running in a thread while the interpreter exits
        self.save_index()
        self.model_thread.close()

    def _register_configured_model(self, s) -> None:
        path = str(Path(self.settings.model_path).resolve())
        if not Path(path).is_file():
            raise FileNotFoundError(f'AMG_MODEL_PATH does not exist: {path}')
        existing = next((m for m in crud.list_models(session=s) if m.path == path), None)
        if existing is None:
            existing = register_checkpoint(s, path, name=Path(path).parent.name)
        if crud.active_model(session=s) is None:
            crud.activate_model(session=s, model_id=existing.id)

    def on_model_thread(self, fn, *args, **kwargs):
        """Model loads, forwards and FAISS calls all run on one thread (see app.batching)."""
        return self.model_thread.call(fn, *args, **kwargs)

    def _index_path(self, model_id: int) -> Path:
        return self.index_dir / f'index-model{model_id}.faiss'

    def _open(self, model: ModelVersion) -> Snapshot:
        embedder = self.on_model_thread(Embedder, model.path, device=self.settings.device,
                                        batch_size=self.settings.embed_batch_size, backend=self.settings.backend,
                                        threads=self.settings.onnx_threads)
        self.metrics.backend.clear()
        self.metrics.backend.labels(backend=embedder.backend).set(1)
        index = VectorIndex.load(self._index_path(model.id), embedder.dim, self.settings.nprobe, self.settings.pca_dim)
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
    def search(self, snap: Snapshot, images: Sequence, k: int,
               allowed: Sequence[Optional[np.ndarray]]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """(scores, ids) of the top ``k`` per query image; ``allowed[i]``: the ids query i may match (None: all).
        Concurrent queries share a forward pass; each one's index search follows on the model thread."""
        tensors = [snap.embedder.preprocess(image) for image in images]  # here: overlaps other forwards
        return self.model_thread.embed(snap.embedder, tensors,
                                       then=lambda xq: _search_each(snap.index, xq, k, allowed))

    def embed(self, embedder: Embedder, images: Sequence) -> np.ndarray:
        bs = embedder.batch_size
        for i in range(0, len(images), bs):
            self.metrics.embed_batch.observe(min(bs, len(images) - i))
        return self.on_model_thread(embedder, list(images))

    def _vectors_for(self, snap: Snapshot, rows: Sequence[GalleryImage]) -> Tuple[List[int], np.ndarray]:
        """Vectors of ``rows`` by the snapshot's model: stored ones from the database, the others embedded from
        their images and stored (so no other replica or restart embeds them again). Unreadable images are logged
        and left out."""
        with self.Session() as s:
            stored = crud.get_vectors(session=s, model_id=snap.model_id, image_ids=[r.id for r in rows])
        todo = [r for r in rows if r.id not in stored]
        bs = max(1, snap.embedder.batch_size)
        for start in range(0, len(todo), bs):
            chunk, pics = [], []
            for row in todo[start:start + bs]:
                try:
                    pics.append(open_image(self.images.resolve(row.image_path)))
                    chunk.append(row.id)
                except (OSError, ValueError) as e:
                    _logger.error('gallery image %d cannot be embedded (%s): left without a vector', row.id, e)
            if chunk:
                xb = _as_stored(self.embed(snap.embedder, pics))
                with self.Session.begin() as s:
                    if crud.get_model(session=s, model_id=snap.model_id) is not None:
                        present = set(crud.get_images(session=s, image_ids=chunk))
                        keep = [j for j, i in enumerate(chunk) if i in present]  # rows deleted meanwhile: skip
                        crud.put_vectors(session=s, model_id=snap.model_id, image_ids=[chunk[j] for j in keep],
                                         vectors=xb[keep])
                stored.update(zip(chunk, xb))
        ids = [r.id for r in rows if r.id in stored]
        vectors = np.stack([stored[i] for i in ids]) if ids else np.zeros((0, snap.embedder.dim), np.float32)
        return ids, vectors

    def _fill(self, snap: Snapshot, rows: Sequence[GalleryImage]) -> List[int]:
        ids, vectors = self._vectors_for(snap, rows)
        if ids:
            self.on_model_thread(snap.index.add, np.asarray(ids), vectors)
        return ids

    # ---- consistency -----------------------------------------------------------------------------------------
    def reconcile(self, snap: Optional[Snapshot] = None) -> Dict[str, int]:
        """Make the index hold exactly one vector, from the snapshot's model, per gallery row (full scan: at
        start-up and model activation; afterwards the change log keeps it so)."""
        snap = snap or self.snapshot()
        with self.write_lock:
            with self.Session() as s:
                seq = crud.last_change_seq(session=s)  # before the scan: later changes are replayed by sync()
                db_ids = set(crud.all_image_ids(session=s))
                stray = [int(i) for i in snap.index.ids() if int(i) not in db_ids]
                self.on_model_thread(snap.index.remove, stray)
                missing = crud.images_needing_vectors(session=s, indexed_ids=snap.index.ids(),
                                                      model_id=snap.model_id)
            done = self._fill(snap, missing)
            with self.Session.begin() as s:
                crud.set_model_version(session=s, image_ids=done, model_id=snap.model_id)
            snap.index.applied_seq, snap.index.awaited = seq, {}
        self._maybe_rebuild(snap)
        if stray or missing:
            _logger.info('reconciled: removed %d stray vectors, added %d', len(stray), len(done))
        return dict(removed=len(stray), embedded=len(done))

    def sync(self, snap: Optional[Snapshot] = None) -> int:
        """Apply the gallery changes logged since the index last looked (by this process or another replica):
        each touched image's vector is added if its row exists, removed if not. Returns how many were touched.

        Sequence numbers can become visible out of order (concurrent writers on PostgreSQL): a skipped number is
        re-asked for until it appears or ``sync_gap_seconds`` pass (a rolled-back transaction leaves a hole)."""
        snap = snap or self._snapshot
        if snap is None:
            return 0
        with self.write_lock:
            index = snap.index
            now = time.monotonic()
            with self.Session() as s:
                changes = crud.changes_after(session=s, seq=index.applied_seq, also=sorted(index.awaited))
                if not changes:
                    self._expire_gaps(index, now)
                    return 0
                expected = index.applied_seq + 1
                for seq, _, _ in changes:
                    index.awaited.pop(seq, None)
                    if seq >= expected:
                        for hole in range(expected, seq):
                            index.awaited.setdefault(hole, now)
                        expected = seq + 1
                index.applied_seq = max(index.applied_seq, expected - 1)
                touched = sorted({image_id for _, image_id, _ in changes})
                rows = crud.get_images(session=s, image_ids=touched)
            gone = [i for i in touched if i not in rows]
            if gone:
                self.on_model_thread(index.remove, gone)
            self._fill(snap, [rows[i] for i in touched if i in rows])
            self._expire_gaps(index, now)
            if snap is self._snapshot:
                self.metrics.gallery_size.set(index.ntotal)
        return len(touched)

    def _expire_gaps(self, index: VectorIndex, now: float) -> None:
        for hole, since in list(index.awaited.items()):
            if now - since > self.settings.sync_gap_seconds:
                del index.awaited[hole]

    def _build(self, snap: Snapshot, kind: Optional[IndexKind] = None, chunk: int = 10_000) -> None:
        """(Re)build the snapshot's index from the whole gallery as ``kind`` (default: what the settings want for
        its size): trained on a sample, filled by chunks on the side, then swapped in and caught up with the change
        log. Searches keep using the old contents until the swap; uploads are not blocked."""
        with self.Session() as s:
            seq = crud.last_change_seq(session=s)
            ids = crud.all_image_ids(session=s)
        kind = kind or self.wanted_index_kind(len(ids))
        rng = np.random.default_rng(0)
        sample = []
        if kind != 'exact' and len(ids) >= MIN_TRAIN:
            picked = rng.choice(ids, size=min(len(ids), self.settings.index_train_size), replace=False)
            sample = self._vectors_for(snap, self._rows(picked))[1]
        fresh = snap.index.trained_like(kind, sample if len(sample) else np.zeros((0, snap.index.dim)), len(ids))
        for start in range(0, len(ids), chunk):
            got, vectors = self._vectors_for(snap, self._rows(ids[start:start + chunk]))
            if got:
                fresh.add(np.asarray(got), vectors)
            if self.index_build.get('state') == 'running':
                self.index_build['done'] = min(len(ids), start + chunk)
        with self.write_lock:
            snap.index.swap(fresh)
            snap.index.applied_seq, snap.index.awaited = seq, {}
            self.sync(snap)  # what changed while the new index was filled

    def _rows(self, ids) -> List[GalleryImage]:
        with self.Session() as s:
            rows = crud.get_images(session=s, image_ids=[int(i) for i in ids])
        return [rows[int(i)] for i in ids if int(i) in rows]

    def wanted_index_kind(self, n: int) -> IndexKind:
        kind = self.settings.index_kind
        if kind == 'auto':
            kind = 'approx' if n >= self.settings.approx_threshold else 'exact'
        return kind if kind == 'exact' or n >= MIN_TRAIN else 'exact'

    def _maybe_rebuild(self, snap: Snapshot) -> None:
        """Start a background rebuild when the index is not of the kind the settings want for its size."""
        if snap.index.kind != self.wanted_index_kind(snap.index.ntotal):
            try:
                self.rebuild_index()
            except RuntimeError:  # one is running already
                pass

    def rebuild_index(self, kind: Optional[IndexKind] = None) -> None:
        """Rebuild the active model's index in the background (``kind``: default from the settings)."""
        snap = self.snapshot()
        if self.index_build.get('state') == 'running':
            raise RuntimeError('an index build is running already')
        self.index_build = dict(state='running', kind=kind or 'auto', done=0, total=snap.index.ntotal, error=None)

        def run() -> None:
            try:
                self._build(snap, kind)
                self.index_build.update(state='done', kind=snap.index.kind, done=snap.index.ntotal)
                _logger.info('index rebuilt as %s (%d vectors)', snap.index.kind, snap.index.ntotal)
            except Exception as e:  # reported through the API; the old index keeps serving
                _logger.exception('index rebuild failed')
                self.index_build.update(state='failed', error=str(e))
        threading.Thread(target=run, name='index-build', daemon=True).start()

    def consistent(self) -> bool:
        """Cheap check for /readyz: after catching up with the change log, as many vectors as gallery rows."""
        snap = self._snapshot
        if snap is None:
            return False
        self.sync(snap)
        with self.Session() as s:
            return crud.count_images(session=s) == snap.index.ntotal

    def save_index(self) -> None:
        snap = self._snapshot
        if snap is not None and snap.index.dirty:
            snap.index.save(self._index_path(snap.model_id))

    def _maintenance_loop(self) -> None:
        """Follow the change log and the active model (other replicas), save the index now and then."""
        last_save = time.monotonic()
        while not self._stop.wait(self.settings.sync_seconds):
            try:
                self.sync()
                self._follow_active_model()
                if self._snapshot is not None and self.activation.get('state') != 'running':
                    self._maybe_rebuild(self._snapshot)  # e.g. auto: the gallery grew past approx_threshold
                if time.monotonic() - last_save >= self.settings.index_save_seconds:
                    self.save_index()
                    last_save = time.monotonic()
            except Exception:  # try again next round; the database stays the source of truth
                _logger.exception('index maintenance failed')

    def _follow_active_model(self) -> None:
        """Another replica activated a model: activate it here too (its vectors are in the database already)."""
        if self.activation.get('state') == 'running':
            return
        with self.Session() as s:
            active = crud.active_model(session=s)
        snap = self._snapshot
        if active is None or (snap is not None and active.id == snap.model_id):
            return
        if self.activation.get('state') == 'failed' and self.activation.get('model_id') == active.id:
            return  # reported through the API; retried when an admin activates it again
        _logger.info('model %d was activated elsewhere: following', active.id)
        self.activate(active.id)

    # ---- gallery ---------------------------------------------------------------------------------------------
    def add_gallery(self, items: Sequence[DecodedImage], metas: Sequence[Dict[str, Any]]) -> List[GalleryImage]:
        snap = self.snapshot()
        with self.write_lock:
            snap = self.snapshot()  # the model may have been swapped while we waited
            stored = [self.images.put(item.data, item.ext) for item in items]
            xb = _as_stored(self.embed(snap.embedder, [item.image for item in items]))
            with self.Session.begin() as s:
                rows = crud.add_images(session=s, vectors=xb, model_id=snap.model_id, rows=[
                    dict(meta, source_name=item.filename, image_sha256=sha, image_path=str(path),
                         model_version=snap.model_id)
                    for item, meta, (sha, path) in zip(items, metas, stored)])
            # committed: acknowledged. The index follows the change log (a crash here: reconcile() repairs it)
            self.sync(snap)
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
            self.sync()
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
            if self.settings.backend != Backend.TORCH:
                ensure_onnx(model.path)  # here, in the background, never on a request
            new = self._open(model)
            new.index.remove(new.index.ids())  # start clean: any stale file for this model is rebuilt
            with self.Session() as s:
                self.activation['total'] = crud.count_images(session=s)
            self._build(new)  # old model keeps serving meanwhile
            with self.write_lock:  # catch up with uploads and deletes made during the build
                self.sync(new)
                new.index.save(self._index_path(model.id))  # before the commit: a crash leaves a usable file
                with self.Session.begin() as s:
                    crud.activate_model(session=s, model_id=model.id)
                self._snapshot = new
                self.metrics.gallery_size.set(new.index.ntotal)
            self.activation.update(state='done', done=new.index.ntotal)
            _logger.info('model %d active (%d gallery vectors)', model.id, new.index.ntotal)
        except Exception as e:  # report through the API; the old model keeps serving
            _logger.exception('activating model %d failed', model.id)
            self.activation.update(state='failed', error=str(e))
