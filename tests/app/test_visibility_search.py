"""Visibility-aware search: a model with the visibility head is searched on the parts both images show (the index's
weighted first pass, then the exact re-score), on FAISS and Milvus, and equals its brute-force definition."""
from dataclasses import replace

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
        # more than the first pass fetches (max(4 k, k + 32) = 42): the re-score sees candidates, not everything
        gallery = [r for r in dataset.gallery if r.pid > 0][:90]
        assert len(gallery) > 2 * 42
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
    assert len(got) == K
    assert np.allclose(list(got.values()), [want[list(ids).index(j)] for j in got], atol=3e-3)
    assert len(set(got) & set(ids[np.argsort(-want)[:K]])) >= K - 1  # the best k, not any k
    assert np.allclose(result['visibility'], np.maximum(q_vis[0], q_vis[1]), atol=2e-3)  # the best crop's


def test_a_known_persons_search_leaves_them_out_and_rescores(vis_client, visibility_checkpoint):
    client, gallery, ids = vis_client
    pid = gallery[0].pid
    r = client.post(f'/v1/persons/{pid}/search', params={'k': '5', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    (result,) = r.json()['results']
    mine = np.array([g.pid == pid for g in gallery])
    assert result['visibility'] is not None and not set(ids[mine]) & {m['image_id'] for m in result['matches']}
    # the definition: the person's crops pooled with visibility weights, against everyone else's, re-scored on the
    # parts both show
    gf, g_vis = _brute(visibility_checkpoint, [g.path for g in gallery])
    parts = g_vis.shape[1]
    g = scale_parts(gf, g_vis, parts)
    # the stored vectors keep visibilities up to a scale: each crop's best-shown part counts as fully visible
    query = pool_visible(scale_parts(gf[mine], g_vis[mine] / g_vis[mine].max(1, keepdims=True), parts), parts)
    want = rescore_mutual(g[~mine] @ query, part_visibility(query[None], parts)[0], part_visibility(g[~mine], parts))
    others = ids[~mine]
    best = np.argsort(-want)[:5]
    got = {m['image_id']: m['cosine'] for m in result['matches']}
    assert len(got) == 5 and len(set(got) & set(others[best])) >= 4
    assert np.allclose([got[i] for i in others[best] if i in got], [want[j] for j in best if others[j] in got],
                       atol=3e-3)
    assert r.json()['score_kind'] == ('probability' if client.app.state.service.current.scores else 'cosine')


def test_plain_cosines_are_answered_as_cosines_with_their_own_threshold(vis_client, dataset):
    """The calibration and threshold were fitted on the mutually-visible-part score: visibility=false answers are
    plain cosines, labelled so, with the settings' cosine threshold."""
    from reid.matching import ScoreCalibration
    client, _, _ = vis_client
    service = client.app.state.service
    original = service.current
    service.current = replace(original, scores=ScoreCalibration(a=60.0, b=-59.0), min_score=0.9)
    try:
        files = files_for([dataset.query[0].path])
        on = client.post('/v1/search', files=files, data={'k': '3'}).json()
        off = client.post('/v1/search', files=files_for([dataset.query[0].path]),
                          data={'k': '3', 'visibility': 'false'}).json()
    finally:
        service.current = original
    assert on['score_kind'] == 'probability' and on['min_score'] == 0.9
    assert off['score_kind'] == 'cosine' and off['min_score'] == service.settings.default_min_score
    for m in off['results'][0]['matches']:
        assert m['score'] == m['cosine']
    for m in on['results'][0]['matches']:
        assert np.isclose(m['score'], 1 / (1 + np.exp(-(60 * m['cosine'] - 59))), atol=1e-4)
