"""The vector engine: the one home of gallery vectors and of the attributes searches filter on.

The SQL database is the source of truth for gallery rows; an engine holds, per model, each row's vector plus its
person, camera, time and tags, fed from the gallery change log, and evaluates a :class:`GalleryFilter` itself: no
list of allowed ids crosses from SQL on a search. Two engines share this interface:

- ``faiss`` (:mod:`storage.faiss_engine`): embedded, in each process's memory; attribute columns beside the FAISS
  ids, the filter turned into a bitmap by vectorised numpy.
- ``milvus`` (:mod:`storage.milvus_engine`): a Milvus server (standalone or distributed) or Milvus Lite, shared by
  all replicas; the filter becomes a Milvus boolean expression.
"""
import hashlib
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np

__all__ = ['GalleryFilter', 'Attributes', 'VectorEngine', 'EngineUnavailable', 'FilterNotSupported', 'NO_TIME',
           'time_key', 'site_code', 'Hits', 'PositionStore', 'MAX_TAGS', 'UNKNOWN_PERSON', 'MAX_EXCLUDED_IDS']

MAX_TAGS = 32  # tags per image: uploads are refused beyond it (app.forms), Milvus's array field holds this many
# an image whose person is unknown (NULL in SQL): no person filter (ids >= 0) matches it, every exclusion admits it
UNKNOWN_PERSON = -1
# images one filter may leave out by id (a sighting's crops: app.sightings.MAX_SIGHTING_CROPS); a Milvus expression
# and the filter's hash grow with them
MAX_EXCLUDED_IDS = 256

# a row without a timestamp: far before any datetime (year 1 is -6.2e16 us), so "after" never matches it; "before"
# excludes it explicitly (SQL's NULL <= x is not true either). Not INT64's minimum: Milvus's expression parser
# reads the literal's magnitude as a positive int64 first.
NO_TIME = -(2 ** 62)
_EPOCH = datetime(1970, 1, 1)

Hits = Tuple[np.ndarray, np.ndarray]  # (scores, ids) of one query, best first; only real hits (no -1 padding)


def site_code(site: str) -> int:
    """A site's name as a stable int64 (0 for no site): the FAISS attribute column holds codes, not strings, and
    every replica computes the same one."""
    return 0 if not site else int(hashlib.sha256(site.encode()).hexdigest()[:15], 16)


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
    exclude_person: Optional[int] = None  # a person's own images left out (their other sightings are searched)
    camera_ids: Tuple[int, ...] = ()
    exclude_camera: Optional[int] = None
    after: Optional[datetime] = None
    before: Optional[datetime] = None
    tags: Tuple[str, ...] = ()
    # these images left out (a sighting's own crops: "where else was this person"), sorted; at most
    # MAX_EXCLUDED_IDS. By id, not by a sighting attribute: a Milvus collection's fields cannot be added later
    exclude_ids: Tuple[int, ...] = ()
    # only images of these sites (a key scoped to sites searches them alone); empty: every site
    sites: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.exclude_ids) > MAX_EXCLUDED_IDS:
            raise ValueError(f'at most {MAX_EXCLUDED_IDS} excluded ids, got {len(self.exclude_ids)}')

    @classmethod
    def of(cls, *, camera_ids: Optional[Iterable[int]] = None, tags: Optional[Iterable[str]] = None,
           exclude_ids: Optional[Iterable[int]] = None, sites: Optional[Iterable[str]] = None,
           **conditions: Any) -> 'GalleryFilter':
        """From the API's optional lists (None or empty: no condition)."""
        return cls(camera_ids=tuple(sorted(set(camera_ids or ()))), tags=tuple(sorted(set(tags or ()))),
                   exclude_ids=tuple(sorted({int(i) for i in (() if exclude_ids is None else exclude_ids)})),
                   sites=tuple(sorted(set(sites or ()))), **conditions)

    def within(self, sites: Optional[Sequence[str]]) -> 'GalleryFilter':
        """Also only these sites (None: no such condition)."""
        return self if sites is None else replace(self, sites=tuple(sorted(set(sites))))

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
    sites: List[str] = field(default_factory=list)  # each image's site ('': none); empty list: none of them

    def __post_init__(self) -> None:
        if not self.sites:
            self.sites = [''] * len(self.person)

    @classmethod
    def of_rows(cls, rows: Sequence[Any]) -> 'Attributes':
        """From rows with ``person_id`` (None: :data:`UNKNOWN_PERSON`), ``camera_id``, ``timestamp`` and ``tags``."""
        return cls(person=np.fromiter((UNKNOWN_PERSON if r.person_id is None else r.person_id for r in rows),
                                      np.int64, len(rows)),
                   camera=np.fromiter((r.camera_id for r in rows), np.int64, len(rows)),
                   time=np.fromiter((time_key(r.timestamp) for r in rows), np.int64, len(rows)),
                   tags=[tuple(r.tags or ()) for r in rows], sites=[getattr(r, 'site', '') or '' for r in rows])

    def __len__(self) -> int:
        return len(self.person)

    def take(self, positions: Sequence[int]) -> 'Attributes':
        positions = np.asarray(positions, dtype=np.int64)
        return Attributes(self.person[positions], self.camera[positions], self.time[positions],
                          [self.tags[int(p)] for p in positions], [self.sites[int(p)] for p in positions])


class PositionStore(Protocol):
    """Where a shared engine's change-log position lives (the database, app.changelog), and the lock every replica
    takes before moving it."""

    def locked(self, key: str) -> ContextManager[None]: ...

    def read(self, key: str) -> Tuple[int, Dict[int, float]]:
        """(applied seq, awaited seq -> since when, wall-clock seconds); (0, {}) when none is stored."""

    def write(self, key: str, seq: int, awaited: Dict[int, float]) -> None: ...


class VectorEngine(ABC):
    """Vectors of one model with their attributes, by gallery image id; scores are inner products.

    An engine owns its whole life cycle, so that callers never ask which one they hold: :meth:`prepare` (make it
    usable), :meth:`reset` (start empty), :meth:`build_target` + :meth:`take` (fill a new index and put it in
    place), :meth:`publish` (this model is now the active one), :meth:`drop`; and where its change-log position
    lives (:meth:`following`, :meth:`start_at`).

    ``applied_seq``/``awaited``: how far the gallery change log has been applied (app.changelog). An engine that
    replicas share keeps that position in a :class:`PositionStore`, the others in memory."""
    name: str = ''
    shared: bool = False  # one copy for every replica (its position is the store's)
    remote: bool = False  # each call is a round trip: searched off the model thread, which it would hold up
    # extra hits a search asks for: answers are joined with the database's rows, and an engine shared by replicas
    # may return, for a moment, a vector whose row another replica deleted (Milvus below Strong consistency)
    stale_margin: int = 0

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

    # ---- life cycle ------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make the engine usable: create what is missing and load it (:class:`EngineUnavailable` when it cannot
        be reached)."""

    def reset(self) -> None:
        """Start empty: a model activated anew rebuilds whatever an earlier attempt left."""
        self.remove(self.ids())

    def build_target(self, kind: Optional[str], sample: Callable[[], np.ndarray],
                     expected: int) -> 'VectorEngine':
        """Where a full build of ``expected`` vectors writes: this engine, filled in place (the default), or a new
        one of index ``kind`` filled on the side and put in place by :meth:`take`. ``sample()`` gives vectors
        like the gallery's where the new index must be trained; it is called only then."""
        return self

    def take(self, built: 'VectorEngine') -> None:
        """Put ``built`` (from :meth:`build_target`) in place: searches see the old or the new, never a mix."""
        if built is not self:
            raise ValueError('an engine can only take what its build_target gave')

    def needs_rebuild(self, kind: str) -> bool:
        """Whether the index is not of ``kind`` (what the settings want for its size), so a rebuild would change
        it; engines whose server chooses its own index never do."""
        return False

    def check_kind(self, kind: Optional[str]) -> None:
        """Raise ValueError for an index kind a rebuild of this engine cannot be asked for."""
        if kind is not None:
            raise ValueError(f'the {self.name} engine has no index kinds to choose from')

    def publish(self, previous: Optional['VectorEngine']) -> None:
        """This model is now the active one (``previous``: the model it replaced): outside readers follow it, and
        what no replica serves any more is let go."""

    def drop(self) -> None:
        """Delete everything this engine holds, for good."""
        self.reset()

    # ---- the change-log position -----------------------------------------------------------------------------
    @contextmanager
    def following(self, store: PositionStore) -> Iterator[None]:
        """Around applying change-log entries: a shared engine's position is read from ``store`` under the
        replicas' lock and written back when the block succeeds (a failure leaves it, to be applied again);
        the others keep theirs in memory."""
        if not self.shared:
            yield
            return
        with store.locked(self.position_key):
            seq, awaited = store.read(self.position_key)
            wall, mono = time.time(), time.monotonic()
            self.applied_seq, self.awaited = seq, {k: mono - (wall - v) for k, v in awaited.items()}
            yield
            wall, mono = time.time(), time.monotonic()
            store.write(self.position_key, self.applied_seq,
                        {k: wall - (mono - v) for k, v in self.awaited.items()})

    def start_at(self, store: PositionStore, seq: int) -> None:
        """After a build from the whole gallery as of ``seq``: follow the log from there."""
        if self.shared:
            store.write(self.position_key, seq, {})
        self.applied_seq, self.awaited = seq, {}

    def kept_by_replicas(self, store: PositionStore) -> bool:
        """Whether other replicas keep this engine already (a shared one with a position): it is then only
        brought up to date, not rebuilt."""
        return self.shared and store.read(self.position_key) != (0, {})

    def remove_from_other_models(self, ids: Sequence[int]) -> List[str]:
        """Remove these ids from the copies of this deployment's other models that this engine can reach (an
        erasure leaves nothing in an inactive model's index either); the stores touched. An embedded engine holds
        none (app.engines removes this replica's saved files of other models)."""
        return []

    def filled_by_activating_replica(self) -> bool:
        """Whether the replica that activated a model filled this engine for every replica (a shared one): the
        others then only bring it up to date, and never start it over."""
        return self.shared

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
