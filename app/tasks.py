"""Progress of the service's background tasks (an index build, a model activation), typed; the API maps them."""
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

__all__ = ['TaskState', 'BackgroundTask']


class TaskState(StrEnum):
    IDLE = 'idle'
    RUNNING = 'running'
    DONE = 'done'
    FAILED = 'failed'


@dataclass
class BackgroundTask:
    """One background task's progress: ``done`` of ``total`` gallery vectors, for ``model_id`` / as ``kind``."""
    state: TaskState = TaskState.IDLE
    kind: Optional[str] = None
    model_id: Optional[int] = None
    done: int = 0
    total: int = 0
    error: Optional[str] = None

    @property
    def running(self) -> bool:
        return self.state == TaskState.RUNNING

    def start(self, **fields) -> None:
        """Reset to running with these fields (one assignment each: readers see a consistent record)."""
        self.__dict__.update({**dict(state=TaskState.RUNNING, kind=None, model_id=None, done=0, total=0, error=None),
                              **fields})

    def finish(self, **fields) -> None:
        self.__dict__.update({'state': TaskState.DONE, **fields})

    def fail(self, error: str) -> None:
        self.__dict__.update(state=TaskState.FAILED, error=error)
