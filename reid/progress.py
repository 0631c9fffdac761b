"""The contract of long runs (training, pruning): one progress callback type, one way to stop, one summary type.

A run calls ``on_progress(Progress)`` after each step of its work; a callback that returns True asks it to stop,
and the run then raises :class:`Cancelled` (after writing what it had). Both return a :class:`RunSummary`.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

__all__ = ['Progress', 'ProgressCallback', 'Cancelled', 'RunSummary']


@dataclass
class Progress:
    """Where a run stands: ``stage`` (train, pruned, finetune, final, done), the share done and the latest numbers
    (loss, acc, val_*) and counters (epoch, round, heads)."""
    stage: str
    progress: float
    metrics: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)

    def flat(self) -> Dict[str, Any]:
        """One flat record (log lines, job rows)."""
        return dict(stage=self.stage, progress=self.progress, **self.info, **self.metrics)


ProgressCallback = Callable[[Progress], Optional[bool]]


class Cancelled(Exception):
    """The progress callback asked the run to stop."""


@dataclass
class RunSummary:
    """What a run made: ``checkpoint`` (the model to use: training's best, pruning's pruned model), headline
    ``metrics`` (validation numbers for training, standard-protocol test numbers for pruning), the progress
    ``history`` and run-specific ``details``. On torchrun ranks other than 0, ``rank`` > 0 and rank 0 reports."""
    checkpoint: str
    metrics: Dict[str, float] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    details: Dict[str, Any] = field(default_factory=dict)
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0
