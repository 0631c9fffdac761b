"""Gallery vectors in FAISS with 64-bit ids (our image ids), inner-product (= cosine on unit vectors).

``exact`` is a flat index under ``IndexIDMap2``; ``approx`` an IVF index (nlist ~ 4·sqrt(n), nprobe settable)
with our ids stored natively and a hashtable direct map, (re)built from the vectors when asked. Either way ids are
ours and vectors can be removed and read back.
"""
import os
import threading
from pathlib import Path
from typing import Dict, Iterable, Literal, Optional, Tuple

import faiss
import numpy as np

__all__ = ['VectorIndex', 'IndexKind']

IndexKind = Literal['exact', 'approx']


class VectorIndex:
    def __init__(self, dim: int, kind: IndexKind = 'exact', nprobe: int = 16) -> None:
        self.dim = dim
        self.kind = kind
        self.nprobe = nprobe
        self._lock = threading.RLock()
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.dirty = False
        self.applied_seq = 0  # the gallery change log is applied up to here (app.state.sync)
        self.awaited: Dict[int, float] = {}  # older change seqs not visible yet -> since when (monotonic s)

    # ---- mutation --------------------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, xb: np.ndarray) -> None:
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if xb.ndim != 2 or xb.shape[1] != self.dim or len(ids) != len(xb):
            raise ValueError(f'expected ({len(ids)}, {self.dim}) vectors, got {xb.shape}')
        with self._lock:
            self.remove(ids)  # re-adding an id replaces its vector
            self.index.add_with_ids(xb, ids)
            self.dirty = True

    def _ivf(self) -> Optional[faiss.IndexIVF]:
        return self.index if isinstance(self.index, faiss.IndexIVF) else None

    def remove(self, ids: Iterable[int]) -> int:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            if self._ivf() is not None:
                # a hashtable direct map removes by an explicit id array only (absent ids are skipped)
                n = self.index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            else:
                n = self.index.remove_ids(faiss.IDSelectorBatch(ids))
            self.dirty = self.dirty or n > 0
            return n

    def rebuild(self, kind: Optional[IndexKind] = None) -> None:
        """Re-create the index (e.g. switch to IVF once the gallery is large); ids and vectors are kept."""
        with self._lock:
            ids, xb = self.ids(), self.vectors()
            kind = kind or self.kind
            if kind == 'approx' and len(ids) >= 256:
                nlist = int(max(16, min(4 * np.sqrt(len(ids)), len(ids) // 39)))
                ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
                ivf.train(xb)
                ivf.nprobe = self.nprobe
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
                index = ivf
            else:
                kind = 'exact'
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            if len(ids):
                index.add_with_ids(xb, ids)
            self.index, self.kind, self.dirty = index, kind, True

    # ---- reading ---------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def ids(self) -> np.ndarray:
        with self._lock:
            ivf = self._ivf()
            if ivf is None:
                return faiss.vector_to_array(self.index.id_map).astype(np.int64)
            lists = ivf.invlists
            parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                     for i in range(ivf.nlist) if lists.list_size(i)]
            return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    def vectors(self) -> np.ndarray:
        with self._lock:
            ids = self.ids()
            if len(ids) == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def search(self, xq: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(D, I) of shape (nq, k): scores and ids, -1 ids where fewer than k candidates exist."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        with self._lock:
            if allowed_ids is not None:
                sel = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64))
                params = (faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe) if self._ivf() is not None
                          else faiss.SearchParameters(sel=sel))
                return self.index.search(xq, k, params=params)
            return self.index.search(xq, k)

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomic write (a crash leaves the previous file)."""
        path = Path(path)
        tmp = path.with_name(path.name + '.tmp')
        with self._lock:
            faiss.write_index(self.index, str(tmp))
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self.dirty = False

    @classmethod
    def load(cls, path: Path, dim: int, kind: IndexKind = 'exact', nprobe: int = 16) -> 'VectorIndex':
        """Read ``path`` if it exists and fits ``dim``; otherwise an empty index (reconciliation refills it)."""
        index = cls(dim, kind, nprobe)
        path = Path(path)
        if path.exists():
            try:
                loaded = faiss.read_index(str(path))
            except RuntimeError:
                return index
            if loaded.d == dim:
                index.index = loaded
                index.kind = 'approx' if isinstance(loaded, faiss.IndexIVF) else 'exact'
                if isinstance(loaded, faiss.IndexIVF):
                    loaded.nprobe = nprobe
                    loaded.set_direct_map_type(faiss.DirectMap.Hashtable)  # rebuilt from the lists
        return index
