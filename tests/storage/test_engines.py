"""The vector engines: filters evaluated inside each engine equal a brute-force evaluation of the same conditions on
the same attributes, for every FAISS index kind and for Milvus (Lite, in this process)."""
from datetime import datetime, timedelta

import numpy as np
import pytest

from storage.engine import NO_TIME, Attributes, FilterNotSupported, GalleryFilter, time_key
from storage.faiss_engine import FaissEngine

DIM = 16
TAGS = ('red', 'blue', 'bag', 'say "hi"', 'back\\slash', 'ünï')
START = datetime(2026, 3, 1)


def gallery(n=600, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 5 * n), size=n, replace=False)).astype(np.int64)  # gaps, as after deletes
    xb = rng.standard_normal((n, DIM)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    times = [None if i % 7 == 0 else START + timedelta(hours=int(h)) for i, h in enumerate(rng.integers(0, 240, n))]
    attrs = Attributes(person=rng.integers(0, 20, n), camera=rng.integers(0, 6, n),
                       time=np.array([time_key(t) for t in times], np.int64),
                       tags=[tuple(t for t in TAGS if rng.random() < 0.3) for _ in range(n)])
    return ids, xb, attrs, times


def admitted(flt: GalleryFilter, attrs: Attributes, times) -> np.ndarray:
    """The filter by hand, row by row, with SQL's semantics (a row without a timestamp fails every time bound)."""
    keep = []
    for i in range(len(attrs)):
        ok = flt.person_id is None or attrs.person[i] == flt.person_id
        ok &= not flt.camera_ids or attrs.camera[i] in flt.camera_ids
        ok &= flt.exclude_camera is None or attrs.camera[i] != flt.exclude_camera
        ok &= flt.after is None or (times[i] is not None and times[i] >= flt.after)
        ok &= flt.before is None or (times[i] is not None and times[i] <= flt.before)
        ok &= set(flt.tags) <= set(attrs.tags[i])
        keep.append(ok)
    return np.asarray(keep)


FILTERS = [
    GalleryFilter(),
    GalleryFilter(exclude_camera=2),
    GalleryFilter.of(camera_ids=[1, 4]),
    GalleryFilter(person_id=7),
    GalleryFilter(after=START + timedelta(hours=50)),
    GalleryFilter(before=START + timedelta(hours=30)),
    GalleryFilter(after=START + timedelta(hours=10), before=START + timedelta(hours=100), exclude_camera=0),
    GalleryFilter.of(tags=['red']),
    GalleryFilter.of(tags=['red', 'bag', 'say "hi"']),
    GalleryFilter.of(tags=['back\\slash', 'ünï'], camera_ids=[0, 1, 2]),
    GalleryFilter.of(tags=['nobody has this']),
    GalleryFilter(person_id=3, exclude_camera=1, after=START),
]


def faiss_engine(kind):
    def make(ids, xb, attrs):
        engine = FaissEngine(DIM, nprobe=64).trained_like(kind, xb, len(xb))
        engine.upsert(ids, xb, attrs)
        return engine
    return make


@pytest.fixture
def milvus_engine(tmp_path):
    pytest.importorskip('pymilvus', reason='pymilvus is not installed (pip install -e .[milvus])')
    pytest.importorskip('milvus_lite', reason='milvus-lite is not installed (pip install -e .[milvus])')
    from storage.milvus_engine import MilvusEngine

    def make(ids, xb, attrs):
        engine = MilvusEngine(str(tmp_path / 'milvus.db'), 'amg_test_model1', DIM, index_type='FLAT',
                              index_params={})
        engine.create()
        engine.upsert(ids, xb, attrs)
        return engine
    return make


@pytest.fixture(params=['faiss-exact', 'faiss-approx', 'faiss-compressed', 'milvus'])
def make_engine(request):
    if request.param == 'milvus':
        return request.getfixturevalue('milvus_engine'), True
    return faiss_engine(request.param.split('-')[1]), request.param == 'faiss-exact'


def test_filters_inside_the_engine_equal_brute_force(make_engine):
    make, exact = make_engine
    ids, xb, attrs, times = gallery()
    engine = make(ids, xb, attrs)
    assert engine.count() == len(ids) and np.array_equal(engine.ids(), ids)
    queries = xb[:3] + 0.1
    k = 10
    hits = engine.search(np.tile(queries, (len(FILTERS), 1)), k, [flt for flt in FILTERS for _ in queries])
    for n, flt in enumerate(FILTERS):
        allowed = admitted(flt, attrs, times)
        for q in range(len(queries)):
            D, I = hits[n * len(queries) + q]
            assert set(I.tolist()) <= set(ids[allowed].tolist()), flt  # never a row the filter refuses
            sims = xb[allowed] @ queries[q]
            best = ids[allowed][np.argsort(-sims, kind='stable')[:k]]
            if exact:
                assert I.tolist() == best.tolist(), flt
                np.testing.assert_allclose(D, np.sort(sims)[::-1][:k], atol=1e-5)
            elif len(best):
                assert len(set(I.tolist()) & set(best.tolist())) >= 0.5 * len(best), flt


def test_upserts_replace_and_removes_forget_attributes(make_engine):
    make, _ = make_engine
    ids, xb, attrs, _ = gallery(n=300)
    engine = make(ids, xb, attrs)
    target = int(ids[5])
    moved = Attributes(person=np.array([999]), camera=np.array([5]), time=np.array([NO_TIME]), tags=[('new',)])
    engine.upsert(np.array([target]), xb[5:6], moved)
    assert engine.count() == len(ids)
    (D, I), = engine.search(xb[5:6], 3, [GalleryFilter.of(tags=['new'])])
    assert I.tolist() == [target]
    (_, I), = engine.search(xb[5:6], 3, [GalleryFilter(person_id=int(attrs.person[5]), camera_ids=(5,))])
    assert target not in I.tolist()  # its old person
    engine.remove([target, 10 ** 7])  # an absent id is skipped
    (_, I), = engine.search(xb[5:6], 3, [GalleryFilter(person_id=999)])
    assert I.tolist() == [] and engine.count() == len(ids) - 1


def test_faiss_engine_persists_with_its_attributes(tmp_path):
    ids, xb, attrs, times = gallery(n=300)
    path = tmp_path / 'index.faiss'
    engine = FaissEngine(DIM, path=path)
    engine.upsert(ids, xb, attrs)
    engine.save()
    loaded = FaissEngine.load(path, DIM)
    flt = GalleryFilter.of(tags=['red'], exclude_camera=1)
    assert [h[1].tolist() for h in loaded.search(xb[:2], 5, [flt, flt])] == \
           [h[1].tolist() for h in engine.search(xb[:2], 5, [flt, flt])]
    # attributes that do not match the index (a crash between the two writes): refilled from the database
    engine.remove(ids[:3])
    engine.index.save(path)
    assert FaissEngine.load(path, DIM).count() == 0
    (tmp_path / 'index.faiss.attrs.npz').unlink()
    assert FaissEngine.load(path, DIM).count() == 0


def test_the_faiss_bitmap_is_the_filter():
    ids, xb, attrs, times = gallery(n=500)
    engine = FaissEngine(DIM)
    engine.upsert(ids, xb, attrs)
    for flt in FILTERS[1:]:
        bits = np.unpackbits(engine.columns.bitmap(flt), bitorder='little').astype(bool)
        got = set(np.flatnonzero(bits).tolist()) & set(ids.tolist())  # absent ids are never scanned
        assert got == set(ids[admitted(flt, attrs, times)].tolist()), flt


def test_milvus_expressions_escape_and_refuse_what_they_cannot_say():
    from storage.milvus_engine import filter_expression
    assert filter_expression(GalleryFilter()) == ''
    assert filter_expression(GalleryFilter(person_id=3, exclude_camera=2)) == 'person == 3 and camera != 2'
    assert filter_expression(GalleryFilter.of(tags=['say "hi"'])) == r'array_contains_all(tags, ["say \"hi\""])'
    assert f'time != {NO_TIME}' in filter_expression(GalleryFilter(before=START))
    with pytest.raises(FilterNotSupported):
        filter_expression(GalleryFilter.of(tags=['tab\there']))
