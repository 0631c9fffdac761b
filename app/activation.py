"""Switching the active model: a new index is built while the old model serves, then both swap at once; replicas
follow an activation made elsewhere."""
import logging
import threading
from typing import TYPE_CHECKING

from models.embedder import Backend
from storage import crud
from storage.db import ModelVersion

from .tasks import BackgroundTask

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ['ModelActivator']

_logger = logging.getLogger(__name__)


class ModelActivator:
    def __init__(self, service: 'ServiceState') -> None:
        self.service = service
        self.progress = BackgroundTask()

    def activate(self, model_id: int) -> None:
        """Switch models in the background: the old model serves until the new index is complete, then both swap
        at once (and the database records it in the same step)."""
        if self.progress.running:
            raise RuntimeError(f'model {self.progress.model_id} is being activated already')
        with self.service.Session() as s:
            model = crud.get_model(session=s, model_id=model_id)
            if model is None:
                raise KeyError(model_id)
        self.progress.start(model_id=model_id)
        threading.Thread(target=self._activate, args=(model,), name=f'activate-{model_id}', daemon=True).start()

    def _activate(self, model: ModelVersion) -> None:
        from .state import ensure_onnx
        service = self.service
        try:
            if service.settings.backend != Backend.TORCH:
                ensure_onnx(model.path)  # here, in the background, never on a request
            new = service.open(model)
            new.index.remove(new.index.ids())  # start clean: any stale file for this model is rebuilt
            with service.Session() as s:
                self.progress.total = crud.count_images(session=s)
            service.index_builder.build(new, progress=self.progress)  # the old model keeps serving meanwhile
            with service.write_lock:  # catch up with uploads and deletes made during the build
                service.changelog.sync(new)
                new.index.save(service.index_path(model.id))  # before the commit: a crash leaves a usable file
                with service.Session.begin() as s:
                    crud.activate_model(session=s, model_id=model.id)
                service.current = new
                service.metrics.gallery_size.set(new.index.ntotal)
            self.progress.finish(done=new.index.ntotal)
            _logger.info('model %d active (%d gallery vectors)', model.id, new.index.ntotal)
        except Exception as e:  # report through the API; the old model keeps serving
            _logger.exception('activating model %d failed', model.id)
            self.progress.fail(str(e))

    def follow_active_model(self) -> None:
        """Another replica activated a model: activate it here too (its vectors are in the database already)."""
        if self.progress.running:
            return
        with self.service.Session() as s:
            active = crud.active_model(session=s)
        snap = self.service.current
        if active is None or (snap is not None and active.id == snap.model_id):
            return
        if self.progress.state == 'failed' and self.progress.model_id == active.id:
            return  # reported through the API; retried when an admin activates it again
        _logger.info('model %d was activated elsewhere: following', active.id)
        self.activate(active.id)
