"""Switching the active model: a new index is built while the old model serves, then both swap at once; replicas
follow an activation made elsewhere."""
import logging
import threading
from typing import Callable, Optional

from models.runtime import Backend
from storage import crud
from storage.db import ModelVersion

from .changelog import ChangeLogFollower
from .index_builds import IndexBuilder
from .metrics import Metrics
from .registry import ensure_onnx
from .settings import Settings
from .snapshot import Snapshot
from .tasks import BackgroundTask

__all__ = ['ModelActivator']

_logger = logging.getLogger(__name__)


class ModelActivator:
    def __init__(self, session_factory: Callable, settings: Settings, open_model: Callable[[ModelVersion], Snapshot],
                 index_builder: IndexBuilder, changelog: ChangeLogFollower, write_lock: threading.RLock,
                 metrics: Metrics, current: Callable[[], Optional[Snapshot]],
                 make_current: Callable[[Snapshot], None]) -> None:
        self.Session = session_factory
        self.settings = settings
        self.open_model = open_model  # loads the model (on the model thread) and opens its engine
        self.index_builder = index_builder
        self.changelog = changelog
        self.write_lock = write_lock
        self.metrics = metrics
        self.current = current
        self.make_current = make_current
        self.progress = BackgroundTask()

    def activate(self, model_id: int, follow: bool = False) -> None:
        """Switch models in the background: the old model serves until the new engine is complete, then both swap
        at once (and the database records it in the same step). ``follow``: the model was activated by another
        replica, whose shared engine (Milvus) is complete already."""
        if self.progress.running:
            raise RuntimeError(f'model {self.progress.model_id} is being activated already')
        with self.Session() as s:
            model = crud.get_model(session=s, model_id=model_id)
            if model is None:
                raise KeyError(model_id)
        self.progress.start(model_id=model_id)
        threading.Thread(target=self._activate, args=(model, follow), name=f'activate-{model_id}',
                         daemon=True).start()

    def _activate(self, model: ModelVersion, follow: bool) -> None:
        try:
            if self.settings.backend != Backend.TORCH:
                ensure_onnx(model.path, model.sha256)  # here, in the background, never on a request
            new = self.open_model(model)
            engine = new.engine
            with self.Session() as s:
                self.progress.total = crud.count_images(session=s)
            if follow and engine.filled_by_activating_replica():
                self.changelog.reconcile(new)  # built by the replica that activated it: catch up, never reset
            else:
                engine.reset()  # start clean: whatever an earlier attempt left is rebuilt
                self.index_builder.build(new, progress=self.progress)  # the old model keeps serving meanwhile
            old = self.current()
            with self.write_lock:  # catch up with uploads and deletes made during the build
                self.changelog.sync(new)
                engine.save()  # before the commit: a crash leaves a usable file
                with self.Session.begin() as s:
                    crud.activate_model(session=s, model_id=model.id)
                self.make_current(new)
                # /readyz speaks of the new model from the swap on: no 503 in a zero-downtime switch
                self.changelog.check_health(new)
            if not follow:
                engine.publish(previous=None if old is None else old.engine)
            self.progress.finish(done=engine.count())
            _logger.info('model %d active (%d gallery vectors)', model.id, engine.count())
        except Exception as e:  # report through the API; the old model keeps serving
            _logger.exception('activating model %d failed', model.id)
            self.progress.fail(str(e))

    def follow_active_model(self) -> None:
        """Another replica activated a model: activate it here too (its vectors are in the database already)."""
        if self.progress.running:
            return
        with self.Session() as s:
            active = crud.active_model(session=s)
        snap = self.current()
        if active is None or (snap is not None and active.id == snap.model_id):
            return
        if self.progress.state == 'failed' and self.progress.model_id == active.id:
            return  # reported through the API; retried when an admin activates it again
        _logger.info('model %d was activated elsewhere: following', active.id)
        self.activate(active.id, follow=True)
