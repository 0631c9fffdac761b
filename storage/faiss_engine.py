"""The embedded vector engine: a FAISS index (storage.index, any kind) with the filterable attributes in numpy
columns indexed by image id, persisted beside the index file.

Gallery ids are the database's small integers, so the columns are dense arrays indexed by id (1,000,000 rows: 25 MB)
and tags are one bitmap per tag (1,000,000 rows: 125 kB a tag). A filter becomes a FAISS ``IDSelectorBitmap`` by
vectorised numpy: comparisons over the columns, ``packbits``, then AND with the tag bitmaps (~0.1-0.3 ms at
1,000,000 rows, measured by hand), evaluated only for the ids the index scans.

Searches and :meth:`FaissEngine.save` read under one :class:`~storage.locks.ReadWriteLock`, upserts and removes
write: writing the index file (seconds for a large one) never holds a search up, only the writes that follow it.
"""
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .engine import NO_TIME, Attributes, GalleryFilter, Hits, VectorEngine, group_by_filter, site_code, time_key
from .index import MIN_TRAIN, IndexKind, VectorIndex
from .locks import ReadWriteLock

__all__ = ['FaissEngine', 'AttributeColumns']

_logger = logging.getLogger(__name__)
_EMPTY: Hits = (np.zeros(0, np.float32), np.zeros(0, np.int64))


def _count_bits(bitmap: np.ndarray) -> int:
    if hasattr(np, 'bitwise_count'):  # numpy >= 2
        return int(np.bitwise_count(bitmap).sum(dtype=np.int64))
    return int(np.unpackbits(bitmap).sum(dtype=np.int64))


def _bit_positions(ids: np.ndarray):
    return ids >> 3, (np.uint8(1) << (ids & 7).astype(np.uint8))


class AttributeColumns:
    """person, camera, time, site (storage.engine.site_code) and tags of the gallery images an index holds, by
    image id."""

    def __init__(self) -> None:
        self.present = np.zeros(0, bool)
        self.person = np.zeros(0, np.int64)
        self.camera = np.zeros(0, np.int64)
        self.time = np.zeros(0, np.int64)
        self.site = np.zeros(0, np.int64)
        self.tag_bits: Dict[str, np.ndarray] = {}  # tag -> little-endian bitmap over ids (uint8, capacity / 8)

    @property
    def capacity(self) -> int:
        return len(self.present)

    def _grow(self, max_id: int) -> None:
        if max_id < self.capacity:
            return
        new = max(8, self.capacity)
        while new <= max_id:
            new *= 2
        extra = new - self.capacity
        self.present = np.concatenate([self.present, np.zeros(extra, bool)])
        self.person = np.concatenate([self.person, np.zeros(extra, np.int64)])
        self.camera = np.concatenate([self.camera, np.zeros(extra, np.int64)])
        self.time = np.concatenate([self.time, np.full(extra, NO_TIME, np.int64)])
        self.site = np.concatenate([self.site, np.zeros(extra, np.int64)])
        for tag, bits in self.tag_bits.items():
            self.tag_bits[tag] = np.concatenate([bits, np.zeros(extra // 8, np.uint8)])

    def set(self, ids: np.ndarray, attributes: Attributes) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if ids.min() < 0:
            raise ValueError('gallery ids are >= 0')
        self._grow(int(ids.max()))
        self.clear(ids[self.present[ids]])  # replaced: drop the old tags
        self.present[ids] = True
        self.person[ids], self.camera[ids], self.time[ids] = attributes.person, attributes.camera, attributes.time
        self.site[ids] = np.fromiter((site_code(s) for s in attributes.sites), np.int64, len(ids))
        by_tag: Dict[str, List[int]] = {}
        for image_id, tags in zip(ids.tolist(), attributes.tags):
            for tag in tags:
                by_tag.setdefault(tag, []).append(image_id)
        for tag, tagged in by_tag.items():
            bits = self.tag_bits.get(tag)
            if bits is None:
                bits = self.tag_bits[tag] = np.zeros(self.capacity // 8, np.uint8)
            byte, bit = _bit_positions(np.asarray(tagged, dtype=np.int64))
            np.bitwise_or.at(bits, byte, bit)

    def clear(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < self.capacity)]
        ids = ids[self.present[ids]]
        if len(ids) == 0:
            return
        self.present[ids] = False
        byte, bit = _bit_positions(ids)
        for bits in self.tag_bits.values():
            np.bitwise_and.at(bits, byte, ~bit)

    def bitmap(self, flt: GalleryFilter) -> Optional[np.ndarray]:
        """The ids ``flt`` admits as a little-endian bitmap (FAISS's IDSelectorBitmap); None: all."""
        mask: Optional[np.ndarray] = None

        def also(condition: np.ndarray) -> None:
            nonlocal mask
            mask = condition if mask is None else np.logical_and(mask, condition, out=mask)

        if flt.person_id is not None:
            also(self.person == flt.person_id)
        if flt.exclude_person is not None:
            also(self.person != flt.exclude_person)
        if flt.camera_ids:
            also(np.isin(self.camera, np.asarray(flt.camera_ids, dtype=np.int64)))
        if flt.exclude_camera is not None:
            also(self.camera != flt.exclude_camera)
        if flt.after is not None:
            also(self.time >= time_key(flt.after))
        if flt.before is not None:
            also(self.time <= time_key(flt.before))
            if flt.after is None:
                also(self.time != NO_TIME)
        if flt.sites:
            also(np.isin(self.site, np.asarray([site_code(s) for s in flt.sites], dtype=np.int64)))
        if flt.exclude_ids:
            kept = np.ones(self.capacity, bool)
            excluded = np.asarray(flt.exclude_ids, dtype=np.int64)
            kept[excluded[(excluded >= 0) & (excluded < self.capacity)]] = False
            also(kept)
        if mask is not None:
            also(self.present)  # bits only for ids the index holds: their count is the filter's selectivity
        bits = None if mask is None else np.packbits(mask, bitorder='little')
        for tag in flt.tags:  # tag bits are set for held ids only
            tagged = self.tag_bits.get(tag)
            if tagged is None:
                return np.zeros(max(1, self.capacity // 8), np.uint8)
            bits = tagged.copy() if bits is None else np.bitwise_and(bits, tagged, out=bits)
        return bits

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        tags = sorted(self.tag_bits)
        with open(path, 'wb') as f:
            np.savez(f, present=self.present, person=self.person, camera=self.camera, time=self.time, site=self.site,
                     tag_names=np.array(tags, dtype=str),
                     tag_bits=np.stack([self.tag_bits[t] for t in tags]) if tags
                     else np.zeros((0, self.capacity // 8), np.uint8))
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> 'AttributeColumns':
        with np.load(path, allow_pickle=False) as data:
            out = cls()
            # a file from before sites has no site column: KeyError, and the index is refilled from the database
            out.present, out.person, out.camera, out.time, out.site = (
                data[k] for k in ('present', 'person', 'camera', 'time', 'site'))
            out.tag_bits = {str(t): bits for t, bits in zip(data['tag_names'], data['tag_bits'])}
        columns = (out.present, out.person, out.camera, out.time, out.site)
        if len({len(c) for c in columns}) != 1 or len(out.present) % 8:
            raise ValueError('inconsistent attribute columns')
        return out


class FaissEngine(VectorEngine):
    """Vectors in a FAISS index of any kind (exact, approx, compressed; storage.index) and their attributes in
    :class:`AttributeColumns`; ``path``: where :meth:`save` writes both (``PATH`` and ``PATH.attrs.npz``)."""
    name = 'faiss'

    def __init__(self, dim: int, nprobe: int = 16, pca_dim: int = 256, path: Optional[Path] = None) -> None:
        super().__init__(dim)
        self.index = VectorIndex(dim, nprobe, pca_dim)
        self.columns = AttributeColumns()
        self.path = None if path is None else Path(path)
        self._lock = ReadWriteLock()

    @property
    def kind(self) -> str:
        return str(self.index.kind)

    @property
    def dirty(self) -> bool:
        return self.index.dirty

    # ---- building --------------------------------------------------------------------------------------------
    def trained_like(self, kind: IndexKind, sample: np.ndarray, expected: Optional[int] = None) -> 'FaissEngine':
        """An empty engine of index ``kind``, trained on ``sample`` (see VectorIndex.trained_like)."""
        out = FaissEngine(self.dim, self.index.nprobe, self.index.pca_dim, self.path)
        out.index = self.index.trained_like(kind, sample, expected)
        return out

    def build_target(self, kind: Optional[str], sample: Callable[[], np.ndarray], expected: int) -> 'FaissEngine':
        """A new engine of index ``kind`` (default: this one's), trained on ``sample()`` where the kind needs
        training, with room for ``expected`` vectors; filled on the side, then :meth:`take` n."""
        kind = IndexKind(kind or self.index.kind)
        trains = kind != IndexKind.EXACT and expected >= MIN_TRAIN
        target = self.trained_like(kind, sample() if trains else np.zeros((0, self.dim), np.float32), expected)
        target.reserve(expected)
        return target

    def take(self, built: 'VectorEngine') -> None:
        if built is self:
            return
        if not isinstance(built, FaissEngine):
            raise ValueError('a FAISS engine can only take what its build_target gave')
        with self._lock.write():  # searches see the old or the new, never a mix
            self.index.swap(built.index)
            self.columns = built.columns

    def needs_rebuild(self, kind: str) -> bool:
        return self.kind != kind

    def check_kind(self, kind: Optional[str]) -> None:
        if kind is not None and kind not in tuple(IndexKind):
            raise ValueError(f'unknown index kind {kind!r}; choose from {", ".join(IndexKind)}')

    def drop(self) -> None:
        """Empty, and its files removed."""
        with self._lock.write():
            self.reset()
            if self.path is not None:
                for path in (self.path, _attrs_path(self.path)):
                    path.unlink(missing_ok=True)

    # ---- the engine ------------------------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Room for ``n`` vectors before a large fill (storage.index.VectorIndex.reserve)."""
        self.index.reserve(n)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes: Attributes) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._check_vectors(ids, vectors, attributes, self.dim)
        with self._lock.write():
            self.index.add(ids, vectors)
            self.columns.set(ids, attributes)

    def remove(self, ids: Iterable[int]) -> int:
        ids = np.asarray(list(ids), dtype=np.int64)
        with self._lock.write():
            self.columns.clear(ids)
            return self.index.remove(ids)

    def search(self, queries: np.ndarray, k: int, filters: Sequence[Optional[GalleryFilter]]) -> List[Hits]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out: List[Hits] = [_EMPTY] * len(queries)
        with self._lock.read():
            for flt, positions in group_by_filter(filters).items():
                bitmap = None if flt is None else self.columns.bitmap(flt)
                admitted = None if bitmap is None else _count_bits(bitmap)
                if admitted == 0:
                    continue  # nothing admitted: no search
                D, I = self.index.search(queries[positions], k, bitmap=bitmap, admitted=admitted)
                for row, position in enumerate(positions):
                    keep = I[row] >= 0
                    out[position] = (D[row][keep], I[row][keep])
        return out

    def count(self) -> int:
        return self.index.ntotal

    def ids(self) -> np.ndarray:
        return self.index.ids()

    def vectors(self) -> np.ndarray:
        return self.index.vectors()

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self) -> None:
        """Atomic writes of the attributes, then the index; :meth:`load` refuses a pair that does not match.
        Searches go on meanwhile (both read); upserts and removes wait for it."""
        if self.path is None:
            return
        with self._lock.read():
            if not self.index.dirty:
                return
            attrs = _attrs_path(self.path)
            tmp = attrs.with_name(attrs.name + '.tmp')
            self.columns.save(tmp)
            os.replace(tmp, attrs)
            self.index.save(self.path)

    @classmethod
    def load(cls, path: Path, dim: int, nprobe: int = 16, pca_dim: int = 256) -> 'FaissEngine':
        """The saved index and attributes at ``path``; an empty engine (the reconcile refills it from the database)
        when either is missing, of another dimension, or they disagree on the ids (a crash between the two
        writes, or an index file from before the attributes existed)."""
        engine = cls(dim, nprobe, pca_dim, path)
        loaded = VectorIndex.load(path, dim, nprobe, pca_dim)
        if loaded.ntotal == 0:
            return engine
        try:
            columns = AttributeColumns.load(_attrs_path(Path(path)))
        except (OSError, ValueError, KeyError) as e:
            _logger.warning('index %s has no readable attributes (%s): refilled from the database', path, e)
            return engine
        if not np.array_equal(np.flatnonzero(columns.present), loaded.ids()):
            _logger.warning('index %s and its attributes disagree: refilled from the database', path)
            return engine
        engine.index, engine.columns = loaded, columns
        return engine


def _attrs_path(path: Path) -> Path:
    return path.with_name(path.name + '.attrs.npz')

