"""The vector engine: the one home of gallery vectors and of the attributes searches filter on.

The SQL database is the source of truth for gallery rows; an engine holds, per model, each row's vector plus its
person, camera, time and tags, fed from the gallery change log, and evaluates a :class:`GalleryFilter` itself: no
list of allowed ids crosses from SQL on a search. Two engines share this interface:

- ``faiss`` (:mod:`storage.faiss_engine`): embedded, in each process's memory; attribute columns beside the FAISS
  ids, the filter turned into a bitmap by vectorised numpy.
- ``milvus`` (:mod:`storage.milvus_engine`): a Milvus server (standalone or distributed) or Milvus Lite, shared by
  all replicas; the filter becomes a Milvus boolean expression.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['GalleryFilter', 'Attributes', 'VectorEngine', 'EngineUnavailable', 'FilterNotSupported', 'NO_TIME',
           'time_key', 'Hits']

# a row without a timestamp: far before any datetime (year 1 is -6.2e16 us), so "after" never matches it; "before"
# excludes it explicitly (SQL's NULL <= x is not true either). Not INT64's minimum: Milvus's expression parser
# reads the literal's magnitude as a positive int64 first.
NO_TIME = -(2 ** 62)
_EPOCH = datetime(1970, 1, 1)

Hits = Tuple[np.ndarray, np.ndarray]  # (scores, ids) of one query, best first; only real hits (no -1 padding)


def time_key(when: Optional[datetime]) -> int:
    """A naive-UTC datetime as integer microseconds since 1970 (:data:`NO_TIME` for None)."""
    if when is None:
        return NO_TIME
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class EngineUnavailable(RuntimeError):
    """The engine cannot be reached (a Milvus server down): searches answer 503, writes wait in the change log."""


class FilterNotSupported(ValueError):
    """A filter value this engine cannot express (answered 422)."""


@dataclass(frozen=True)
class GalleryFilter:
    """Which gallery images a query may match; every condition must hold (tags: all of them). Hashable, so
    queries with equal filters are searched together."""
    person_id: Optional[int] = None
    camera_ids: Tuple[int, ...] = ()
    exclude_camera: Optional[int] = None
    after: Optional[datetime] = None
    before: Optional[datetime] = None
    tags: Tuple[str, ...] = ()

    @classmethod
    def of(cls, *, camera_ids: Optional[Iterable[int]] = None, tags: Optional[Iterable[str]] = None,
           **conditions: Any) -> 'GalleryFilter':
        """From the API's optional lists (None or empty: no condition)."""
        return cls(camera_ids=tuple(sorted(set(camera_ids or ()))), tags=tuple(sorted(set(tags or ()))),
                   **conditions)

    @property
    def empty(self) -> bool:
        return self == GalleryFilter()

    def excluding_camera(self, camera: Optional[int]) -> 'GalleryFilter':
        return self if camera is None else replace(self, exclude_camera=camera)


@dataclass
class Attributes:
    """The filterable attributes of a batch of gallery images, aligned with their ids."""
    person: np.ndarray  # int64
    camera: np.ndarray  # int64
    time: np.ndarray  # int64 microseconds (time_key), NO_TIME where the row has no timestamp
    tags: List[Tuple[str, ...]] = field(default_factory=list)

    @classmethod
    def of_rows(cls, rows: Sequence[Any]) -> 'Attributes':
        """From rows with ``person_id``, ``camera_id``, ``timestamp`` and ``tags``."""
        return cls(person=np.fromiter((r.person_id for r in rows), np.int64, len(rows)),
                   camera=np.fromiter((r.camera_id for r in rows), np.int64, len(rows)),
                   time=np.fromiter((time_key(r.timestamp) for r in rows), np.int64, len(rows)),
                   tags=[tuple(r.tags or ()) for r in rows])

    @classmethod
    def none(cls, n: int) -> 'Attributes':
        """Attributes of ``n`` rows that have none (person 0, camera 0, no time, no tags): benchmarks, tests."""
        zeros = np.zeros(n, np.int64)
        return cls(person=zeros, camera=zeros.copy(), time=np.full(n, NO_TIME, np.int64), tags=[()] * n)

    def __len__(self) -> int:
        return len(self.person)

    def take(self, positions: Sequence[int]) -> 'Attributes':
        positions = np.asarray(positions, dtype=np.int64)
        return Attributes(self.person[positions], self.camera[positions], self.time[positions],
                          [self.tags[int(p)] for p in positions])


class VectorEngine(ABC):
    """Vectors of one model with their attributes, by gallery image id; scores are inner products of unit vectors
    (cosine similarities).

    ``applied_seq``/``awaited``: how far the gallery change log has been applied (app.changelog). For a ``shared``
    engine (replicas use one copy) that position is kept in the database, for the others in memory."""
    name: str = ''
    shared: bool = False

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.applied_seq = 0
        self.awaited: Dict[int, float] = {}  # older change seqs not visible yet -> since when (monotonic s)

    @property
    def position_key(self) -> str:
        """The name a shared engine's change-log position is stored under (app.changelog)."""
        return self.name

    @property
    @abstractmethod
    def kind(self) -> str:
        """The index kind, as /readyz reports it."""

    @abstractmethod
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes: Attributes) -> None:
        """Add or replace these ids' vectors and attributes (idempotent)."""

    @abstractmethod
    def remove(self, ids: Iterable[int]) -> int:
        """Remove these ids (absent ones are skipped); how many were removed where the engine can tell."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, filters: Sequence[Optional[GalleryFilter]]) -> List[Hits]:
        """Top ``k`` per query among the images its filter admits (None: all)."""

    @abstractmethod
    def count(self) -> int:
        """Vectors held."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every id held, sorted (int64)."""

    def save(self) -> None:
        """Persist what the engine keeps only in memory (a no-op where the engine persists by itself)."""

    def reserve(self, n: int) -> None:
        """Make room for ``n`` vectors before a large fill (where the engine holds them in this process)."""

    def close(self) -> None:
        """Release connections (engines that have any)."""

    def check_filter(self, flt: GalleryFilter) -> None:
        """Raise :class:`FilterNotSupported` for a filter this engine cannot express."""

    @staticmethod
    def _check_vectors(ids: np.ndarray, vectors: np.ndarray, attributes: Attributes, dim: int) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != dim or not len(ids) == len(vectors) == len(attributes):
            raise ValueError(f'expected {len(ids)} ids, ({len(ids)}, {dim}) vectors and as many attributes, got '
                             f'{vectors.shape} and {len(attributes)}')


def group_by_filter(filters: Sequence[Optional[GalleryFilter]]) -> Dict[Optional[GalleryFilter], List[int]]:
    """Query positions by filter (None and the empty filter are one group): equal filters search together."""
    groups: Dict[Optional[GalleryFilter], List[int]] = {}
    for position, flt in enumerate(filters):
        groups.setdefault(None if flt is None or flt.empty else flt, []).append(position)
    return groups
