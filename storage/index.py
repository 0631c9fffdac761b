"""Gallery vectors in FAISS with 64-bit ids (our image ids); scores are cosine similarities of unit vectors.

Three kinds, all keeping our ids, removable, and searchable with an id filter:

- ``exact``: a flat inner-product index under ``IndexIDMap2`` (every vector, full precision).
- ``approx``: IVF-Flat (nlist ~ 4·sqrt(n)), ``nprobe`` lists searched; vectors kept in full.
- ``compressed``: for large galleries of long vectors (LA-Base: 14 x 768 = 10,752 dims, 43 KB each): PCA to
  ``pca_dim`` dimensions, then IVF with float16 codes (``PCA256,IVFn,SQfp16``: 512 bytes a vector), by inner
  product. FAISS's PCA centres what it stores (``A(g - m)``, g ~ m + A^T A (g - m)); the query is projected
  without the centring (``w = A q``), so ``<w, A(g - m)> + <q, m> ~ <q, g>``: the inner product up to the PCA
  residual of ``g - m`` (the mean itself is kept whole), ranked and reported as such. Vectors scaled part by part (a model with the visibility head) are not unit, so neither an L2
  search nor ``1 - d/2`` would rank or score them right (an L2 index saved before this is refilled).

Searches and :meth:`VectorIndex.save` are readers of one :class:`~storage.locks.ReadWriteLock`: a search never waits
for the index file to be written; adds and removes wait for both.

:meth:`VectorIndex.trained_like` + :meth:`VectorIndex.swap` build a new index on the side while searches go on.
"""
import os
import threading
from pathlib import Path
from enum import StrEnum
from typing import Iterable, Optional, Tuple

import faiss
import numpy as np

from .locks import ReadWriteLock

__all__ = ['VectorIndex', 'IndexKind']


class IndexKind(StrEnum):
    EXACT = 'exact'  # flat inner product
    APPROX = 'approx'  # IVF over full vectors
    COMPRESSED = 'compressed'  # PCA + IVF + float16 codes


MIN_TRAIN = 256  # below this many vectors an IVF index is pointless: exact instead
PCA_TRAIN_PER_DIM = 8


# Below this many multiply-adds (queries x vectors scanned x dims) a search runs on one OpenMP thread. FAISS's
# parallel loops wake the whole team even for one query (IndexIDMap's id translation has no size condition), and
# the woken workers then spin for a millisecond or more on cores the service needs: ~2 ms of CPU per search beside
# a 0.2 ms search (docs/benchmarks.md 5b). One query is never faster on more threads (the scan of one query is
# serial: 24 ms on one thread, 40 on two, at 100,000 x 1,536); many queries on a large gallery are.
PARALLEL_SEARCH_WORK = 100_000_000


def _nlist(n: int) -> int:
    return int(max(16, min(4 * np.sqrt(n), n // 39)))


class VectorIndex:
    def __init__(self, dim: int, nprobe: int = 16, pca_dim: int = 256) -> None:
        """An empty exact index; :meth:`trained_like` makes the other kinds."""
        self.dim = dim
        self.kind = IndexKind.EXACT
        self.nprobe = nprobe
        self.pca_dim = pca_dim
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()  # two saves (the maintenance loop, an activation) share one .tmp file
        self.index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.dirty = False
        self._projection: Tuple[Optional[faiss.Index], np.ndarray, np.ndarray] = (None, np.empty(0), np.empty(0))

    # ---- building --------------------------------------------------------------------------------------------
    def trained_like(self, kind: IndexKind, sample: np.ndarray, expected: Optional[int] = None) -> 'VectorIndex':
        """An empty index of ``kind`` trained on ``sample`` (vectors like the gallery's), sized for ``expected``
        vectors; with fewer than 256 sample vectors an IVF kind falls back to exact."""
        if kind not in tuple(IndexKind):
            raise ValueError(f'unknown index kind {kind!r}; choose from {", ".join(IndexKind)}')
        kind = IndexKind(kind)
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        out = VectorIndex(self.dim, self.nprobe, self.pca_dim)
        if kind == 'exact' or len(sample) < MIN_TRAIN:
            return out
        nlist = max(1, min(_nlist(max(expected or 0, len(sample))), len(sample) // 39))  # >= 39 points a centroid
        if kind == 'approx':
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(sample)
        else:
            pca_dim = min(self.pca_dim, self.dim, len(sample))
            index = faiss.index_factory(self.dim, f'PCA{pca_dim},IVF{nlist},SQfp16', faiss.METRIC_INNER_PRODUCT)
            # The PCA learns from a subsample: on 10,752 dims its cost grows with the cube of the sample size
            # (8·pca_dim vectors take seconds), while the IVF centroids learn from the whole sample.
            pca = faiss.downcast_VectorTransform(index.chain.at(0))
            pca.train(sample[:PCA_TRAIN_PER_DIM * pca_dim])
            faiss.extract_index_ivf(index).train(pca.apply(sample))
            index.is_trained = True
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = self.nprobe
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        out.index, out.kind = index, kind
        return out

    def swap(self, other: 'VectorIndex') -> None:
        """Take ``other``'s contents (searches see the old or the new index, never a mix)."""
        with self._lock.write():
            self.index, self.kind, self.dirty = other.index, other.kind, True

    def rebuild(self, kind: Optional[IndexKind] = None) -> None:
        """Re-create the index from its own vectors (small galleries; large ones are rebuilt from the database
        in the background by the service). A compressed index's own vectors are approximations."""
        with self._lock.write():
            ids, xb = self.ids(), self.vectors()
            new = self.trained_like(kind or self.kind, xb, len(xb))
            new.add(ids, xb)
            self.swap(new)

    # ---- mutation --------------------------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Room for ``n`` vectors in an exact index before a fill: its one array grows by doubling, and each
        doubling holds the old and the new copy at once (a 1,000,000-vector start peaked at 8.6 GB for a 5.9 GB
        index: docs/benchmarks.md section 7). IVF lists are small and grow each on its own: nothing to do."""
        if self.kind != IndexKind.EXACT:
            return
        with self._lock.write():
            flat = faiss.downcast_index(self.index.index)
            used = flat.codes.size()
            if n * flat.code_size > used:
                flat.codes.resize(n * flat.code_size)  # the vector keeps its capacity when shrunk back
                flat.codes.resize(used)

    def add(self, ids: np.ndarray, xb: np.ndarray) -> None:
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if xb.ndim != 2 or xb.shape[1] != self.dim or len(ids) != len(xb):
            raise ValueError(f'expected ({len(ids)}, {self.dim}) vectors, got {xb.shape}')
        with self._lock.write():
            self.remove(ids)  # re-adding an id replaces its vector
            self.index.add_with_ids(xb, ids)
            self.dirty = True

    def _ivf(self) -> Optional[faiss.IndexIVF]:
        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:  # flat
            return None

    def remove(self, ids: Iterable[int]) -> int:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock.write():
            if self._ivf() is not None:
                # a hashtable direct map removes by an explicit id array only (absent ids are skipped)
                n = self.index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            else:
                n = self._remove_flat(ids)
            self.dirty = self.dirty or n > 0
            return n

    def _remove_flat(self, ids: np.ndarray) -> int:
        """Remove from the exact index by moving its last vectors into the holes. FAISS's own remove_ids shifts
        every vector after the first removed one: retention removes the oldest, so each batch rewrote nearly the
        whole array under the write lock (586 ms for 500 ids at 1,000,000 x 1,536, a search taking 350 ms); this
        moves as many vectors as it removes (9 ms) and rebuilds the id map (35 ms)."""
        flat = faiss.downcast_index(self.index.index)
        n = self.index.ntotal
        if n == 0:
            return 0
        id_map = faiss.rev_swig_ptr(self.index.id_map.data(), n)  # views: writes go into the index
        codes = faiss.rev_swig_ptr(flat.codes.data(), n * flat.code_size).reshape(n, flat.code_size)
        gone = np.isin(id_map, ids)
        holes = np.flatnonzero(gone)
        k = len(holes)
        if k == 0:
            return 0
        kept_tail = np.arange(n - k, n)[~gone[n - k:]]  # the last k rows that stay fill the holes before them
        holes = holes[holes < n - k]
        codes[holes] = codes[kept_tail]
        id_map[holes] = id_map[kept_tail]
        flat.codes.resize((n - k) * flat.code_size)
        self.index.id_map.resize(n - k)
        flat.ntotal = self.index.ntotal = n - k
        self.index.construct_rev_map()
        return k

    # ---- reading ---------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def ids(self) -> np.ndarray:
        """Every id held, sorted (a flat index keeps them in insertion order, and re-adding an id moves it last)."""
        with self._lock.read():
            ivf = self._ivf()
            if ivf is None:
                return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
            lists = ivf.invlists
            parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                     for i in range(ivf.nlist) if lists.list_size(i)]
            return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    def vectors(self) -> np.ndarray:
        """The vectors of :meth:`ids`, in their order."""
        with self._lock.read():
            ids = self.ids()
            if len(ids) == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def search(self, xq: np.ndarray, k: int, bitmap: Optional[np.ndarray] = None,
               admitted: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(D, I) of shape (nq, k): inner products and ids, -1 ids where fewer than k candidates exist. ``bitmap``:
        only the ids whose bit is set (little-endian bits over ids, uint8; storage.faiss_engine builds it), of which
        the index holds ``admitted``.

        An IVF index searched under a filter probes ``nprobe / (admitted / ntotal)`` lists: as many admitted
        vectors as an unfiltered search compares, since FAISS skips the others before computing a distance (the
        bitmap test is all they cost). Without this a filter admitting 2% found half of its true top 10."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        with self._lock.read():
            params, ivf = None, (None if self.kind == IndexKind.EXACT else self._ivf())  # exact: flat, no lookup
            nprobe = None if ivf is None else ivf.nprobe
            if bitmap is not None:
                bitmap = np.ascontiguousarray(bitmap, dtype=np.uint8)  # referenced by sel during the search
                sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
                if ivf is None:
                    params = faiss.SearchParameters(sel=sel)
                else:
                    if admitted is not None:
                        share = max(1, admitted) / max(1, self.index.ntotal)
                        nprobe = int(min(ivf.nlist, np.ceil(self.nprobe / min(1.0, share))))
                    params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
            scanned = self.index.ntotal if ivf is None else self.index.ntotal * min(1.0, nprobe / ivf.nlist)
            serial = len(xq) == 1 or len(xq) * scanned * self.dim < PARALLEL_SEARCH_WORK
            threads = faiss.omp_get_max_threads()  # this thread's setting (OpenMP keeps one per thread)
            if serial:
                faiss.omp_set_num_threads(1)
            try:
                if self.kind == IndexKind.COMPRESSED:
                    D, I = self._search_projected(xq, k, params)
                else:
                    D, I = self.index.search(xq, k, params=params)
            finally:
                if serial:
                    faiss.omp_set_num_threads(threads)
        return D, I

    def _search_projected(self, xq: np.ndarray, k: int, params) -> Tuple[np.ndarray, np.ndarray]:
        """A compressed index's search: the query projected without the PCA's centring, the inner IVF searched
        with it, the stored vectors' offset added back (see the module's docstring)."""
        index, projected_mean, mean = self._projection
        if index is not self.index:  # once per index, not per search (searches hold the lock: it cannot change)
            pca = faiss.downcast_VectorTransform(self.index.chain.at(0))
            projected_mean = -pca.apply(np.zeros((1, self.dim), np.float32))[0]  # A m
            mean = faiss.vector_to_array(pca.mean).astype(np.float32)
            self._projection = (self.index, projected_mean, mean)
        pca = self.index.chain.at(0)
        w = pca.apply(xq) + projected_mean  # A q
        D, I = self.index.index.search(np.ascontiguousarray(w), k, params=params)
        return np.where(I >= 0, D + (xq @ mean)[:, None], -np.inf).astype(np.float32), I

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomic write (a crash leaves the previous file)."""
        path = Path(path)
        tmp = path.with_name(path.name + '.tmp')
        with self._save_lock, self._lock.read():  # searches go on meanwhile; adds and removes wait
            faiss.write_index(self.index, str(tmp))
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self.dirty = False

    @classmethod
    def load(cls, path: Path, dim: int, nprobe: int = 16, pca_dim: int = 256) -> 'VectorIndex':
        """Read ``path`` if it exists and fits ``dim``; otherwise an empty exact index (reconciliation refills it)."""
        index = cls(dim, nprobe, pca_dim)
        path = Path(path)
        if path.exists():
            try:
                loaded = faiss.read_index(str(path))
            except RuntimeError:
                return index
            if isinstance(loaded, faiss.IndexPreTransform) and loaded.metric_type != faiss.METRIC_INNER_PRODUCT:
                return index  # a compressed index from before it searched by inner product: refilled
            if loaded.d == dim:
                index.index = loaded
                ivf = index._ivf()
                if ivf is not None:
                    index.kind = 'compressed' if isinstance(loaded, faiss.IndexPreTransform) else 'approx'
                    ivf.nprobe = nprobe
                    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # rebuilt from the lists
        return index
