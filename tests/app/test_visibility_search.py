"""Visibility-aware search: a model with the visibility head is searched on the parts both images show (the index's
weighted first pass, then the exact re-score), on FAISS and Milvus, and equals its brute-force definition."""
import numpy as np
import pytest

from models.embedder import Embedder
from reid.matching import (mutual_visibility_scores, part_visibility, pool_visible, rescore_mutual, scale_parts)
from tests.app.conftest import files_for, make_client
from tests.conftest import engine_settings

K = 10


@pytest.fixture(scope='module', params=['faiss', 'milvus'])
def vis_client(request, tmp_path_factory, visibility_checkpoint, dataset):
    settings = engine_settings(request.param, tmp_path_factory, request=request)
    with make_client(tmp_path_factory.mktemp('service'), visibility_checkpoint, **settings) as client:
        gallery = [r for r in dataset.gallery if r.pid > 0][:36]  # fewer than the first pass fetches: exact
        r = client.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                        data={'person_id': ','.join(str(g.pid) for g in gallery)})
        assert r.status_code == 201, r.text
        ids = [item['id'] for item in r.json()['data']]
        yield client, gallery, np.array(ids)


def _brute(visibility_checkpoint, paths):
    return Embedder(visibility_checkpoint, backend='torch').embed_with_visibility(paths)


def test_answers_are_the_mutually_visible_part_scores(vis_client, visibility_checkpoint, dataset):
    client, gallery, ids = vis_client
    assert client.app.state.service.current.visible_parts
    queries = [q.path for q in dataset.query[:3]]
    qf, q_vis = _brute(visibility_checkpoint, queries)
    gf, g_vis = _brute(visibility_checkpoint, [g.path for g in gallery])
    assert q_vis.std() > 0.05  # the head's visibilities differ across parts and images
    parts = q_vis.shape[1]
    want = mutual_visibility_scores(qf, gf, q_vis, g_vis, parts)
    plain = qf @ gf.T
    r = client.post('/v1/search', files=files_for(queries), data={'k': str(K), 'min_score': '-1'})
    assert r.status_code == 200, r.text
    off = client.post('/v1/search', files=files_for(queries), data={'k': str(K), 'min_score': '-1',
                                                                  'visibility': 'false'}).json()['results']
    for i, result in enumerate(r.json()['results']):
        got = {m['image_id']: m['cosine'] for m in result['matches']}
        top = np.argsort(-want[i])[:K]
        assert len(got) == K
        # scores: the definition's, up to the float16 the vectors are stored in; the ranking: its top k
        assert np.allclose([got[ids[j]] for j in top if ids[j] in got], [want[i, j] for j in top if ids[j] in got],
                           atol=3e-3)
        assert len(set(got) & set(ids[top])) >= K - 1  # near-ties may swap at the edge
        assert [m['cosine'] for m in result['matches']] == sorted(got.values(), reverse=True)
        assert np.allclose(result['visibility'], q_vis[i], atol=2e-3)
        # visibility off: the plain cosines, every part alike
        plain_got = {m['image_id']: m['cosine'] for m in off[i]['matches']}
        assert off[i]['visibility'] is None
        assert np.allclose(list(plain_got.values()), [plain[i, list(ids).index(j)] for j in plain_got], atol=3e-3)
        assert np.allclose(sorted(plain_got.values(), reverse=True), np.sort(plain[i])[::-1][:K], atol=3e-3)
    assert not np.allclose(want, plain, atol=1e-2)  # the two scores differ: the test tells them apart


def test_a_group_query_pools_visibility_weighted_parts(vis_client, visibility_checkpoint, dataset):
    client, gallery, ids = vis_client
    pid = dataset.query[0].pid
    shots = [q.path for q in dataset.query if q.pid == pid][:2]
    qf, q_vis = _brute(visibility_checkpoint, shots)
    gf, g_vis = _brute(visibility_checkpoint, [g.path for g in gallery])
    parts = q_vis.shape[1]
    query = pool_visible(scale_parts(qf, q_vis, parts), parts)
    g = scale_parts(gf, g_vis, parts)
    want = rescore_mutual(g @ query, part_visibility(query[None], parts)[0], part_visibility(g, parts))
    r = client.post('/v1/search', files=files_for(shots), data={'group': 'true', 'k': str(K), 'min_score': '-1'})
    assert r.status_code == 200, r.text
    (result,) = r.json()['results']
    got = {m['image_id']: m['cosine'] for m in result['matches']}
    assert np.allclose(list(got.values()), [want[list(ids).index(j)] for j in got], atol=3e-3)
    assert np.allclose(result['visibility'], np.maximum(q_vis[0], q_vis[1]), atol=2e-3)  # the best crop's


def test_a_known_persons_search_leaves_them_out_and_rescores(vis_client):
    client, gallery, ids = vis_client
    pid = gallery[0].pid
    r = client.post(f'/v1/persons/{pid}/search', params={'k': '5', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    (result,) = r.json()['results']
    own = {int(i) for i, g in zip(ids, gallery) if g.pid == pid}
    assert result['visibility'] is not None and not own & {m['image_id'] for m in result['matches']}
    scores = [m['cosine'] for m in result['matches']]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
