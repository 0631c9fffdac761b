import numpy as np
import pytest

from storage.images import ImageStore
from storage.index import VectorIndex


def knn_reference(xq, xb, ids, k):
    """Brute-force inner-product search: (D, I)."""
    sims = xq @ xb.T
    order = np.argsort(-sims, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(sims, order, 1), ids[order]


def _data(nb=2000, nq=20, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d))
    xb = centres[rng.integers(0, 50, nb)] + 0.3 * rng.normal(size=(nb, d))
    xq = centres[rng.integers(0, 50, nq)] + 0.3 * rng.normal(size=(nq, d))
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return norm(xq), norm(xb), np.arange(1000, 1000 + nb, dtype=np.int64)


def test_exact_search_matches_brute_force_and_keeps_our_ids():
    xq, xb, ids = _data()
    index = VectorIndex(32)
    index.add(ids, xb)
    D, I = index.search(xq, 10)
    D_ref, I_ref = knn_reference(xq, xb, ids, 10)
    assert np.allclose(D, D_ref, atol=1e-5)
    assert (I == I_ref).mean() > 0.99  # equal up to distance ties


def test_small_searches_run_serially_and_leave_the_threads_setting_as_it_was(monkeypatch):
    """A single query (or little work) runs on one OpenMP thread - FAISS would wake, and leave spinning, a whole
    team for it - with the same results, and the caller's thread setting comes back afterwards."""
    import faiss

    import storage.index
    xq, xb, ids = _data()
    index = VectorIndex(32)
    index.add(ids, xb)
    seen = []
    real_search = index.index.search
    monkeypatch.setattr(index.index, 'search', lambda *a, **kw: (seen.append(faiss.omp_get_max_threads()),
                                                                  real_search(*a, **kw))[1])
    before = faiss.omp_get_max_threads()
    D1, I1 = index.search(xq[:1], 10)
    D20, I20 = index.search(xq, 10)  # 20 x 2000 x 32: little work, serial too
    monkeypatch.setattr(storage.index, 'PARALLEL_SEARCH_WORK', 1)
    D20p, I20p = index.search(xq, 10)  # now "a lot": the caller's setting
    assert seen == [1, 1, before]
    assert faiss.omp_get_max_threads() == before
    assert np.array_equal(I1[0], I20[0]) and np.allclose(D1[0], D20[0])
    assert np.array_equal(I20, I20p) and np.allclose(D20, D20p)


def bitmap_of(ids) -> np.ndarray:
    bits = np.zeros(int(max(ids)) + 1, bool)
    bits[np.asarray(ids)] = True
    return np.packbits(bits, bitorder='little')


def test_remove_readd_filter_and_persist(tmp_path):
    xq, xb, ids = _data(nb=100)
    index = VectorIndex(32)
    index.add(ids, xb)
    assert index.remove(ids[:10]) == 10 and index.ntotal == 90
    index.add(ids[20:21], xb[:1])  # re-adding an id replaces its vector
    assert index.ntotal == 90 and np.allclose(index.vectors()[index.ids() == ids[20]][0], xb[0])
    allowed = ids[50:60]
    D, I = index.search(xq, 5, bitmap=bitmap_of(allowed))
    assert set(I.ravel()) <= set(allowed)
    index.save(tmp_path / 'g.faiss')
    loaded = VectorIndex.load(tmp_path / 'g.faiss', 32)
    assert sorted(loaded.ids()) == sorted(index.ids())
    assert VectorIndex.load(tmp_path / 'missing.faiss', 32).ntotal == 0
    assert VectorIndex.load(tmp_path / 'g.faiss', 64).ntotal == 0  # another model's dimension: rebuilt
    with pytest.raises(ValueError):
        index.add(ids[:2], xb[:3])


def test_approximate_index_recall_and_ids():
    xq, xb, ids = _data(nb=4000, nq=50)
    index = VectorIndex(32, nprobe=16)
    index.add(ids, xb)
    index.rebuild('approx')
    assert index.kind == 'approx' and index.ntotal == 4000
    _, I = index.search(xq, 10)
    _, I_ref = knn_reference(xq, xb, ids, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_ref)])
    assert recall >= 0.9
    assert index.remove(ids[:5]) == 5
    D, I = index.search(xq, 5, bitmap=bitmap_of(ids[100:200]))
    assert set(I.ravel()) - {-1} <= set(ids[100:200])


def test_image_store_is_content_addressed_and_confined(tmp_path):
    store = ImageStore(tmp_path / 'images')
    sha, path = store.put(b'abc', 'jpg')
    assert store.put(b'abc', 'jpg') == (sha, path) and path.read_bytes() == b'abc'
    assert store.resolve(str(path)) == path
    with pytest.raises(ValueError):
        store.resolve(str(tmp_path / 'elsewhere.jpg'))
    with pytest.raises(ValueError):
        store.path_for('../../etc/passwd', 'jpg')


def test_approximate_index_persists(tmp_path):
    xq, xb, ids = _data(nb=1000)
    index = VectorIndex(32)
    index.add(ids, xb)
    index.rebuild('approx')
    index.save(tmp_path / 'ivf.faiss')
    loaded = VectorIndex.load(tmp_path / 'ivf.faiss', 32)
    assert loaded.kind == 'approx' and np.array_equal(np.sort(loaded.ids()), ids)
    assert loaded.remove(ids[:3]) == 3
    assert np.allclose(loaded.vectors()[0], xb[3], atol=1e-6)


def _low_rank(nb, nq, d=512, latent=24, seed=0):
    """Identity-structured vectors: identity centres and per-image variation in a low-dimensional subspace, plus a
    little full-dimensional noise (like real embeddings, whose spectrum falls fast)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(latent, d)) / np.sqrt(latent)
    centres = rng.normal(size=(nb // 8, latent))
    def draw(n):
        z = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, latent))
        x = z @ basis + 0.05 * rng.normal(size=(n, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return draw(nq), draw(nb), np.arange(5000, 5000 + nb, dtype=np.int64)


def test_compressed_index_recall_scores_ids_and_persistence(tmp_path):
    xq, xb, ids = _low_rank(nb=6000, nq=50)
    index = VectorIndex(512, nprobe=16, pca_dim=64)
    fresh = index.trained_like('compressed', xb[:3000], expected=len(xb))
    fresh.add(ids, xb)
    index.swap(fresh)
    assert index.kind == 'compressed' and index.ntotal == len(xb)
    D, I = index.search(xq, 10)
    D_ref, I_ref = knn_reference(xq, xb, ids, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_ref)])
    assert recall >= 0.9
    assert np.abs(D[:, 0] - D_ref[:, 0]).max() < 0.05  # reported as cosines
    assert index.remove(ids[:10]) == 10 and index.ntotal == len(xb) - 10
    allowed = ids[100:150]
    _, I = index.search(xq, 5, bitmap=bitmap_of(allowed))
    assert set(I.ravel()) - {-1} <= set(allowed)
    index.save(tmp_path / 'pq.faiss')
    loaded = VectorIndex.load(tmp_path / 'pq.faiss', 512, nprobe=16)
    assert loaded.kind == 'compressed' and np.array_equal(loaded.ids(), np.sort(ids[10:]))
    assert np.array_equal(loaded.search(xq, 10)[1], index.search(xq, 10)[1])


def test_compressed_scores_keep_a_common_offset_outside_the_pca():
    """Vectors sharing a large mean whose direction the PCA does not keep (it keeps the spread around the mean):
    the reported inner products must still be the true ones, with the mean's part added back whole."""
    rng = np.random.default_rng(4)
    d, rank = 64, 12
    basis = np.linalg.qr(rng.normal(size=(d, rank + 1)))[0].T  # orthonormal: the spread's 12 directions, the mean's
    spread, mean = basis[:rank], 3.0 * basis[rank]
    xb = (mean + rng.normal(size=(2000, rank)) @ spread + 0.01 * rng.normal(size=(2000, d))).astype(np.float32)
    xq = (mean + rng.normal(size=(10, rank)) @ spread).astype(np.float32)
    ids = np.arange(2000, dtype=np.int64)
    index = VectorIndex(d, nprobe=64, pca_dim=16)
    fresh = index.trained_like('compressed', xb, expected=len(xb))
    fresh.add(ids, xb)
    index.swap(fresh)
    D, I = index.search(xq, 5)
    truth = np.take_along_axis(xq @ xb.T, I, 1)
    np.testing.assert_allclose(D, truth, atol=0.25)  # |D| ~ 20; a lost mean would be ~9 off


def test_small_samples_fall_back_to_exact_and_unknown_kinds_are_refused():
    xq, xb, ids = _data(nb=100)
    index = VectorIndex(32)
    assert index.trained_like('compressed', xb).kind == 'exact'  # 100 < 256 training vectors
    with pytest.raises(ValueError, match='unknown index kind'):
        index.trained_like('hnsw', xb)


def test_reserving_room_keeps_the_vectors_and_adds_after_it():
    xq, xb, ids = _data(nb=300)
    index = VectorIndex(32)
    index.add(ids[:100], xb[:100])
    index.reserve(300)
    assert index.ntotal == 100 and np.array_equal(index.ids(), ids[:100])
    index.add(ids[100:], xb[100:])
    D, I = index.search(xq, 5)
    assert np.array_equal(I, knn_reference(xq, xb, ids, 5)[1])


def test_exact_removal_keeps_every_other_vector_its_id_and_search(tmp_path):
    # the exact index removes by moving its last vectors into the holes: any ids, present or not, in any order, then
    # adds after it and a save/load, against a dict of what should be left
    rng = np.random.default_rng(1)
    for trial in range(100):
        n, d = int(rng.integers(1, 60)), 8
        ids = rng.choice(1000, n, replace=False).astype(np.int64)
        x = rng.standard_normal((n, d)).astype(np.float32)
        index = VectorIndex(d)
        index.add(ids, x)
        left = dict(zip(ids.tolist(), x))
        removed = rng.choice(1000, int(rng.integers(0, 40)), replace=False)
        assert index.remove(removed) == len(set(removed.tolist()) & set(left))
        for i in removed.tolist():
            left.pop(i, None)
        index.add(np.array([2000 + trial]), rng.standard_normal((1, d)).astype(np.float32))
        left[2000 + trial] = index.vectors()[-1]
        if trial % 10 == 0:
            index.save(tmp_path / 'i.faiss')
            index = VectorIndex.load(tmp_path / 'i.faiss', d)
        keys = np.array(sorted(left))
        assert index.ids().tolist() == keys.tolist(), trial
        xb = np.stack([left[i] for i in keys])
        np.testing.assert_array_equal(index.vectors(), xb)
        q = rng.standard_normal((3, d)).astype(np.float32)
        D, I = index.search(q, 5)
        truth = keys[np.argsort(-(q @ xb.T), axis=1)[:, :5]]
        assert [set(r) - {-1} for r in I.tolist()] == [set(r) for r in truth.tolist()], trial
