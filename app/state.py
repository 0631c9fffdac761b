"""The service's core: database, image store, the active model and its vector engine (a :class:`Snapshot`), the model
thread, and the life cycle; its collaborators each do one job (app.changelog: keep an engine equal to the gallery;
app.index_builds: (re)build engines in the background; app.activation: switch models; app.gallery_writes: uploads
and deletions; app.search_service: the search step).

The database is the source of truth: gallery rows, their vectors (float16, per model) and a change log. The vector
engine (storage.engine: FAISS in this process, or a Milvus collection shared by all replicas) holds the active
model's vectors with the attributes searches filter on, follows the change log (this process's writes and other
replicas'), and is reconciled at start-up (vectors without rows removed, rows without vectors read back from the
database or re-embedded from the stored images), so a crash at any moment - or a Milvus outage - loses no
acknowledged upload. The rows that search answers show are cached too, and follow the same log
(app.row_cache.MatchRows).
"""
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Dict, Optional, Sequence

import anyio

from models.onnx_backend import file_sha256
from reid.matching import ScoreCalibration, plain_parts, pool_visible
from storage import crud
from storage.db import ModelVersion, make_engine, make_sessionmaker
from storage.engine import EngineUnavailable, GalleryFilter
from storage.images import ImageStore

from .activation import ModelActivator
from .audit import AuditLog
from .identities import IdentityLinker
from .batching import ModelThread
from .changelog import ChangeLogFollower
from .engines import open_engine
from .gallery_writes import GalleryWriter
from .index_builds import IndexBuilder
from .metrics import Metrics
from .registry import ensure_onnx, register_checkpoint
from .retention import RetentionSweeper
from .row_cache import MatchRows, gallery_visibility
from .search_service import engine_search
from .settings import Settings
from .snapshot import NoModel, Snapshot, open_embedder
from .vector_feed import VectorFeed

__all__ = ['ServiceState', 'Snapshot', 'NoModel', 'register_checkpoint', 'ensure_onnx']  # the last four: re-exported

_logger = logging.getLogger(__name__)
HEALTH_SECONDS = 10.0  # /readyz's comparison of the engine with the gallery is renewed at least this often
ID_CHECK_SECONDS = 300.0  # ... and compares every id, not only the counts, this often (and at start)


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
        self.audit = AuditLog(self.Session, self.metrics)  # every /v1 request (app.main records them)
        self.write_lock = threading.RLock()  # uploads, deletes and the model swap
        # image decoding runs in worker threads, this many requests at once: the event loop keeps answering
        self.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
        self.current: Optional[Snapshot] = None  # swapped whole by an activation
        self.model_error: Optional[str] = None  # why AMG_MODEL_PATH could not be served, for /readyz
        self.match_rows = MatchRows(self.Session)  # what search answers show of gallery rows
        self._stop = threading.Event()
        self.reconcile_pending = False  # the engine could not be reached at start: the maintenance loop retries
        self.engine_error: Optional[str] = None  # the last EngineUnavailable, until the engine answers again
        self._saver: Optional[threading.Thread] = None
        self.model_thread = ModelThread(max_batch=settings.embed_batch_size, max_wait_ms=settings.batch_wait_ms,
                                        merge=settings.batch_wait_ms > 0, on_batch=self.metrics.embed_batch.observe)
        # each collaborator gets the pieces it needs, nothing more
        self.feed = VectorFeed(self.Session, self.images, self.model_thread, self.metrics)
        self.changelog = ChangeLogFollower(self.Session, self.engine, self.data_dir, self.write_lock, self.feed,
                                           self.match_rows, settings.sync_gap_seconds, self.metrics,
                                           current=lambda: self.current)
        self.index_builder = IndexBuilder(self.Session, settings, self.feed, self.changelog, self.write_lock)
        self.gallery = GalleryWriter(self.Session, self.engine, self.images, self.feed, self.changelog,
                                     self.write_lock, snapshot=self.snapshot, current=lambda: self.current,
                                     on_engine_error=self._engine_error, index_dir=self.index_dir)
        self.activator = ModelActivator(self.Session, settings, self.open, self.index_builder, self.changelog,
                                        self.write_lock, self.metrics, current=lambda: self.current,
                                        make_current=self._make_current)
        self.identities = IdentityLinker(self)
        self.retention = RetentionSweeper(self.Session, self.engine, self.gallery, settings, self.metrics,
                                          self.data_dir)

    # ---- life cycle ------------------------------------------------------------------------------------------
    def startup(self) -> None:
        with self.Session.begin() as s:
            n = crud.interrupt_running_jobs(session=s)
            if n:
                _logger.warning('%d job(s) were running when the service stopped: marked interrupted', n)
            if self.settings.model_path is not None:
                self._register_configured_model(s)
            active = crud.active_model(session=s)

        def referenced(sha256s):
            with self.Session() as s:
                return crud.referenced_contents(session=s, sha256s=sha256s)
        files, temps = self.images.sweep(referenced, self.settings.orphan_grace_seconds)
        if files or temps:
            _logger.warning('removed %d image file(s) no gallery row names and %d temporary file(s) of interrupted '
                            'writes', files, temps)
        if active is not None:
            self.current = self.open(active)
            self.reconcile_at_start()
        self._saver = threading.Thread(target=self._maintenance_loop, name='index-maintenance', daemon=True)
        self._saver.start()
        self.retention.start()
        self.audit.start()

    def _make_current(self, snap: Snapshot) -> None:
        self.current = snap

    def _engine_error(self, message: str) -> None:
        self.engine_error = message

    def reconcile_at_start(self) -> None:
        """The full reconcile; when the engine cannot be reached the service starts anyway (searches answer 503,
        uploads wait in the change log) and the maintenance loop tries again."""
        snap = self.current
        try:
            self.changelog.reconcile(snap)
            self.changelog.check_health(snap, compare_ids=True)
            self.reconcile_pending, self.engine_error = False, None
        except EngineUnavailable as e:
            _logger.error('vector engine unavailable at start (%s): retrying in the background', e)
            self.reconcile_pending, self.engine_error = True, str(e)
            return
        self.index_builder.maybe_rebuild(snap)

    def shutdown(self) -> None:
        self._stop.set()
        self.retention.stop()
        if self._saver is not None:
            self._saver.join(timeout=60)  # no faiss call may be running in a thread while the interpreter exits
        self.save_index()
        if self.current is not None:
            self.current.engine.close()
        self.model_thread.close()
        self.audit.stop()  # the last events appended

    def _register_configured_model(self, s) -> None:
        path = str(Path(self.settings.model_path).resolve())
        if not Path(path).is_file():  # serve without it (a restart would not help) and say why in /readyz
            self.model_error = f'AMG_MODEL_PATH does not exist: {path}'
            _logger.error('%s: serving without a model', self.model_error)
            return
        existing = next((m for m in crud.list_models(session=s) if m.path == path), None)
        if existing is None:
            existing = register_checkpoint(s, path, name=Path(path).parent.name)
        elif existing.sha256 != (sha := file_sha256(path)):  # the file was replaced: its row's hash follows
            _logger.warning('AMG_MODEL_PATH %s changed since it was registered: recording its new hash', path)
            existing.sha256 = sha
        if crud.active_model(session=s) is None:
            crud.activate_model(session=s, model_id=existing.id)

    def _maintenance_loop(self) -> None:
        """Follow the change log and the active model (other replicas), keep /readyz's health current, save the
        index now and then."""
        last_save = last_check = last_id_try = time.monotonic()
        while not self._stop.wait(self.settings.sync_seconds):
            try:
                if self.reconcile_pending:
                    self.reconcile_at_start()
                    if self.reconcile_pending:
                        continue
                snap = self.current
                try:
                    touched = self.changelog.sync(snap)
                    health = self.changelog.health
                    # every id compared when due, tried again at most every HEALTH_SECONDS (while the log moves,
                    # a comparison is not trusted)
                    now = time.monotonic()
                    compare_ids = (health is not None and now - health.ids_checked_at >= ID_CHECK_SECONDS and
                                   now - last_id_try >= HEALTH_SECONDS)
                    if snap is not None and (touched or health is None or health.behind or health.model_id !=
                                             snap.model_id or health.applied_seq != snap.engine.applied_seq or
                                             time.monotonic() - last_check >= HEALTH_SECONDS or compare_ids):
                        self.changelog.check_health(snap, compare_ids)
                        last_check = time.monotonic()
                        last_id_try = last_check if compare_ids else last_id_try
                    self.engine_error = None
                except EngineUnavailable as e:  # Milvus down: writes wait in the change log
                    self.engine_error = str(e)
                    if snap is not None:
                        self.changelog.note_behind(snap)
                    _logger.warning('vector engine unavailable: %s', e)
                if self.current is not None and not self.activator.progress.running and self.engine_error is None:
                    try:
                        self.identities.link_pending(self.current)  # new video sightings, once embedded
                    except Exception:  # the rest of the round goes on; tried again next round
                        _logger.exception('linking sightings into identities failed')
                self.activator.follow_active_model()
                if self.current is not None and not self.activator.progress.running:
                    self.index_builder.maybe_rebuild(self.current)  # e.g. auto: the gallery grew past the threshold
                if time.monotonic() - last_save >= self.settings.index_save_seconds:
                    self.save_index()
                    last_save = time.monotonic()
            except Exception:  # try again next round; the database stays the source of truth
                _logger.exception('index maintenance failed')

    def save_index(self) -> None:
        snap = self.current
        if snap is not None:
            snap.engine.save()

    # ---- the active model ------------------------------------------------------------------------------------
    def open(self, model: ModelVersion) -> Snapshot:
        """Load ``model`` (on the model thread) and its saved index, if any."""
        embedder = self.on_model_thread(open_embedder, model.path, self.settings, model.sha256 or None)
        self.metrics.backend.clear()
        self.metrics.backend.labels(backend=embedder.backend, precision=embedder.precision).set(1)
        engine = open_engine(self.settings, self.index_dir, model.id, embedder.dim)
        scores = ScoreCalibration.from_record((model.info or {}).get('score_calibration'))
        if model.min_score is None:
            min_score = self.settings.default_min_score
        else:  # the calibrated cosine threshold, on the answers' scale: the same decisions
            min_score = model.min_score if scores is None else float(scores(model.min_score))
        visibility = gallery_visibility(self.Session, model.id, embedder.num_parts) if embedder.has_visibility else None
        return Snapshot(embedder, engine, model.id, model.name, float(min_score), scores, visibility,
                        plain_min_score=self.settings.default_min_score)

    def snapshot(self) -> Snapshot:
        snap = self.current
        if snap is None:
            why = f'{self.model_error}; ' if self.model_error else ''
            raise NoModel(f'{why}no model is loaded: set AMG_MODEL_PATH to a checkpoint and restart, or start a '
                          'train job (POST /v1/admin/jobs) and activate its model '
                          '(POST /v1/admin/models/{id}/activate)')
        return snap

    @property
    def ready(self) -> bool:
        return self.current is not None

    # ---- embedding and search --------------------------------------------------------------------------------
    def on_model_thread(self, fn, *args, **kwargs):
        """Model loads, forwards and FAISS calls all run on one thread (see app.batching)."""
        return self.model_thread.call(fn, *args, **kwargs)

    def submit_search(self, snap: Snapshot, images: Sequence, k: int, filters: Sequence[Optional[GalleryFilter]],
                      timings: Optional[Dict[str, float]] = None, group: bool = False,
                      visible_parts: bool = True) -> Future:
        """A Future of (the query vectors as the engine compares them (n, D), the top ``k`` (scores, ids) per query
        among what ``filters[i]`` admits, or None with a shared engine: the caller searches). Concurrent queries
        share a forward pass; with an embedded engine each one's search follows on the model thread. ``timings``
        gets the seconds of each stage (model_wait, forward, index_search). ``images``: decoded images or already
        preprocessed model inputs. ``group``: the images are one person's crops, pooled into one query.
        ``visible_parts=False`` (a model with the visibility head): the queries count as fully visible."""
        tensors = [snap.embedder.preprocess(image) for image in images]  # inputs pass through
        parts = snap.embedder.num_parts

        def then(xq):
            if group:
                xq = pool_visible(xq, parts)[None]
            if snap.visible_parts and not visible_parts:
                xq = plain_parts(xq, parts)
            # an in-process engine searches right here, after the forward; a remote one in the caller's thread
            return xq, (None if snap.engine.remote else engine_search(snap, xq, k, filters))
        return self.model_thread.submit(snap.encode, tensors, timings=timings, then=then)
