"""reid.matching.pool_parts: a multi-shot query is its definition (per part the weighted mean direction)."""
import numpy as np
import pytest

from reid.matching import pool_parts


def _embeddings(n, parts, dim, seed=0):
    rows = np.random.default_rng(seed).normal(size=(n, parts, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=2, keepdims=True)
    return (rows / np.sqrt(parts)).reshape(n, -1)


def test_a_group_query_is_the_per_part_mean_direction():
    x = _embeddings(3, 4, 5)
    pooled = pool_parts(x, 4)
    rows = x.reshape(3, 4, 5).sum(0)
    want = (rows / np.linalg.norm(rows, axis=1, keepdims=True) / 2.0).reshape(-1)  # 1/sqrt(4 parts)
    assert np.allclose(pooled, want, atol=1e-6) and np.isclose(np.linalg.norm(pooled), 1.0)
    # its score against a gallery vector is the mean over parts of the cosine to each part's mean direction
    g = _embeddings(1, 4, 5, seed=1)[0]
    per_part = [np.dot(rows[p] / np.linalg.norm(rows[p]), g.reshape(4, 5)[p] * 2.0) for p in range(4)]
    assert np.isclose(pooled @ g, np.mean(per_part), atol=1e-6)


def test_one_crop_is_its_own_query_and_weights_select_crops_per_part():
    x = _embeddings(2, 3, 4)
    assert np.allclose(pool_parts(x[:1], 3), x[0], atol=1e-6)
    w = np.array([[1, 0, 1], [0, 1, 0]], np.float32)  # crop 0 sees parts 0 and 2, crop 1 part 1
    mixed = pool_parts(x, 3, w).reshape(3, 4)
    assert np.allclose(mixed[[0, 2]], x[0].reshape(3, 4)[[0, 2]], atol=1e-6)
    assert np.allclose(mixed[1], x[1].reshape(3, 4)[1], atol=1e-6)
    unseen = pool_parts(x, 3, np.array([[1, 0, 1], [1, 0, 1]], np.float32)).reshape(3, 4)
    assert not unseen[1].any()  # a part no crop sees stays zero


def test_shapes_are_checked():
    with pytest.raises(ValueError, match='3 parts'):
        pool_parts(np.zeros((2, 10), np.float32), 3)
    with pytest.raises(ValueError):
        pool_parts(np.zeros((0, 12), np.float32), 3)


def test_multi_shot_queries_group_each_identitys_crops():
    from reid.matching import multi_shot_queries
    x = _embeddings(7, 2, 3)
    pids = np.array([5, 5, 5, 9, 9, 4, 5])
    cams = np.array([0, 1, 2, 0, 2, 1, 3])
    feats, q_pids, q_cams = multi_shot_queries(x, pids, cams, shots=2, parts=2)
    # pid 5: crops 0,1,2,6 -> groups (0,1), (2,6); pid 9: (3,4); pid 4: one crop, left out
    assert q_pids.tolist() == [5, 5, 9] and q_cams.tolist() == [[0, 1], [2, 3], [0, 2]]
    assert np.allclose(feats[1], pool_parts(x[[2, 6]], 2)) and np.allclose(feats[2], pool_parts(x[[3, 4]], 2))
    with pytest.raises(ValueError, match='3 query crops'):
        multi_shot_queries(x[:2], pids[:2] * 0 + np.array([1, 2]), cams[:2], shots=3, parts=2)


def test_the_standard_protocol_removes_every_camera_of_a_multi_shot_query():
    from reid.metrics import eval_market1501
    # gallery: the query's person in cameras 0, 1, 2, then another person; the query was seen in cameras 0 and 1
    g_pids, g_cams = np.array([7, 7, 7, 8]), np.array([0, 1, 2, 0])
    distmat = np.array([[0.1, 0.2, 0.4, 0.3]])  # ranked: cam0 (removed), cam1 (removed), other, cam2
    cmc, mAP, _ = eval_market1501(distmat, np.array([7]), g_pids, np.array([[0, 1]]), g_cams, max_rank=4)
    assert mAP == pytest.approx(0.5) and cmc.tolist() == [0.0, 1.0, 1.0, 1.0]  # the one true match at rank 2
    single, _, _ = eval_market1501(distmat, np.array([7]), g_pids, np.array([0]), g_cams, max_rank=4)
    assert single[0] == 1.0  # one camera only: the cam1 image counts, at rank 1


def test_mutually_visible_scores_are_their_definition():
    from reid.matching import mutual_visibility_scores
    rng = np.random.default_rng(3)
    q, g = _embeddings(3, 4, 5, seed=1), _embeddings(6, 4, 5, seed=2)
    vq, vg = rng.uniform(size=(3, 4)), rng.uniform(size=(6, 4))
    got = mutual_visibility_scores(q, g, vq, vg, parts=4, chunk=2)
    for i in range(3):
        for j in range(6):
            cos = [np.dot(q[i].reshape(4, 5)[p], g[j].reshape(4, 5)[p]) * 4 for p in range(4)]
            w = vq[i] * vg[j]
            assert np.isclose(got[i, j], np.dot(w, cos) / w.sum(), atol=1e-5)
    assert np.allclose(mutual_visibility_scores(q, g, np.ones((3, 4)), np.ones((6, 4)), 4), q @ g.T, atol=1e-5)
    hidden = vq.copy()
    hidden[:, 2:] = 0  # the query shows its top half only: the bottom parts do not count, however they match
    top = mutual_visibility_scores(q, g, hidden, np.ones((6, 4)), 4)
    weights = hidden[:, None, :2] * np.ones((1, 6, 2))
    cos_top = np.einsum('qpd,gpd->qgp', q.reshape(3, 4, 5)[:, :2], g.reshape(6, 4, 5)[:, :2]) * 4
    assert np.allclose(top, (weights * cos_top).sum(2) / weights.sum(2), atol=1e-5)


def test_the_weighted_first_pass_and_its_rescore_are_the_mutually_visible_part_score():
    from reid.matching import (mutual_visibility_scores, part_cosines, part_visibility, rescore_mutual,
                               scale_parts)
    rng = np.random.default_rng(3)
    parts = 4
    qf, gf = _embeddings(3, parts, 6, seed=4), _embeddings(9, parts, 6, seed=5)
    q_vis, g_vis = rng.uniform(0, 1, (3, parts)), rng.uniform(0, 1, (9, parts))
    g_vis[0] = [1, 1, 1e-3, 1e-3]  # shows only the top half (visibilities are floored at 1e-3)
    want = mutual_visibility_scores(qf, gf, q_vis, g_vis, parts)
    q, g = scale_parts(qf, q_vis, parts), scale_parts(gf, g_vis, parts)
    assert np.allclose(part_visibility(g, parts), g_vis, atol=1e-6)  # the vectors carry their visibilities
    inner = q @ g.T  # what the index computes: the numerator, by hand too
    cos = np.einsum('qpd,gpd->qgp', qf.reshape(3, parts, -1), gf.reshape(9, parts, -1)) * parts
    assert np.allclose(inner, (q_vis[:, None] * g_vis[None] * cos).sum(2) / parts, atol=1e-6)
    for i in range(3):
        assert np.allclose(rescore_mutual(inner[i], part_visibility(q[i:i + 1], parts)[0], part_visibility(g, parts)),
                           want[i], atol=1e-5)
        # visibility off: the plain embeddings' inner product, from the scaled vectors alike
        assert np.allclose(part_cosines(q[i], g, parts), qf[i] @ gf.T, atol=1e-6)
    # all ones: the plain score
    ones = scale_parts(qf, np.ones((3, parts)), parts)
    assert np.allclose(ones, qf, atol=1e-6)
    assert np.allclose(mutual_visibility_scores(qf, gf, np.ones((3, parts)), np.ones((9, parts)), parts), qf @ gf.T,
                       atol=1e-6)


def test_a_visibility_weighted_group_query_is_its_definition():
    from reid.matching import part_visibility, pool_visible, scale_parts
    parts, dim = 3, 4
    x = _embeddings(2, parts, dim)
    vis = np.array([[1.0, 0.2, 1e-3], [0.5, 0.8, 1e-3]], np.float32)  # the last part all but hidden
    pooled = pool_visible(scale_parts(x, vis, parts), parts).reshape(parts, dim)
    units = x.reshape(2, parts, dim) * np.sqrt(parts)
    for p in range(parts):  # per part: the visibility-weighted mean direction, scaled by the best crop's visibility
        mean = (vis[:, p, None] * units[:, p]).sum(0)
        assert np.allclose(pooled[p], mean / np.linalg.norm(mean) * vis[:, p].max() / np.sqrt(parts), atol=1e-6)
    assert np.allclose(part_visibility(pooled.reshape(1, -1), parts)[0], [1.0, 0.8, 1e-3], atol=1e-6)
    assert np.allclose(pool_visible(x, parts), pool_parts(x, parts), atol=1e-6)  # plain embeddings: pool_parts


def test_evaluate_pools_visible_parts_for_a_multi_shot_query(monkeypatch):
    """evaluate_model(visibility=True, multi_shot=K): each group pooled with its crops' visibilities (as the service's
    group query), scored on mutually visible parts; here on hand-made features."""
    import reid.engine
    from reid.matching import mutual_visibility_scores, part_visibility, pool_visible, scale_parts
    from reid.metrics import evaluate_rank
    parts = 2
    rng = np.random.default_rng(0)
    qf, gf = _embeddings(4, parts, 3, seed=7), _embeddings(6, parts, 3, seed=8)
    q_vis, g_vis = rng.uniform(0.1, 1, (4, parts)).astype(np.float32), rng.uniform(0.1, 1, (6, parts)).astype(np.float32)
    q_pids, q_cams = np.array([1, 1, 2, 2]), np.array([1, 2, 1, 2])
    g_pids, g_cams = np.array([1, 1, 2, 2, 3, 3]), np.array([3, 4, 3, 4, 1, 2])
    feats = {'q': (qf, q_pids, q_cams), 'g': (gf, g_pids, g_cams)}
    vis = {'q': q_vis, 'g': g_vis}

    class Net:
        has_visibility, num_parts = True, parts
    monkeypatch.setattr(reid.engine, 'extract_features', lambda m, records, *a, **kw: feats[records])
    monkeypatch.setattr(reid.engine, 'extract_visibility', lambda m, records, *a, **kw: vis[records])
    got = reid.engine.evaluate_model(Net(), 'q', 'g', protocols=('standard',), multi_shot=2, visibility=True,
                                     progress=False)['standard']
    pooled = np.stack([pool_visible(scale_parts(qf[g], q_vis[g], parts), parts) for g in ([0, 1], [2, 3])])
    sim = mutual_visibility_scores(scale_parts(pooled, np.ones((2, parts)), parts), gf, part_visibility(pooled, parts),
                                   g_vis, parts)
    want = evaluate_rank(1 - sim, np.array([1, 2]), g_pids, np.array([[1, 2], [1, 2]]), g_cams, protocol='standard')
    assert got == want


def test_the_gallerys_form_ranks_by_the_score_and_rescores_exactly():
    """Stored as_gallery, the index's inner product with a fully visible query is the mutually-visible-part score
    itself (the plain numerator ranks images that show little below any that shows much); the re-score from the
    stored form's part weights equals the definition for any query."""
    from reid.matching import (as_gallery, as_query, mutual_visibility_scores, part_weights, plain_parts,
                               rescore_mutual, scale_parts)
    rng = np.random.default_rng(0)
    parts, n = 4, 50
    qf = plain_parts(rng.standard_normal((3, parts * 8)), parts)  # LA embeddings: unit parts / sqrt(parts)
    gf = plain_parts(rng.standard_normal((n, parts * 8)), parts)
    q_vis = np.stack([np.ones(parts), rng.uniform(0.1, 1, parts), rng.uniform(0.1, 1, parts)]).astype(np.float32)
    g_vis = rng.uniform(0.05, 1, (n, parts)).astype(np.float32)
    want = mutual_visibility_scores(qf, gf, q_vis, g_vis, parts)
    stored = as_gallery(scale_parts(gf, g_vis, parts), parts)
    queries = scale_parts(qf, q_vis, parts)
    inner = queries @ stored.T
    assert np.allclose(inner[0], want[0], atol=1e-5)  # fully visible query: the first pass is the score
    numerator = queries[0] @ scale_parts(gf, g_vis, parts).T
    assert np.argsort(-numerator)[:5].tolist() != np.argsort(-want[0])[:5].tolist()  # what the form mends
    for i in range(3):
        assert np.allclose(rescore_mutual(inner[i], q_vis[i], part_weights(stored, parts)), want[i], atol=1e-5)
    back = as_query(stored, parts)
    assert np.allclose(part_weights(back, parts), g_vis / g_vis.max(1, keepdims=True), atol=1e-5)
    # stored vectors of either form pass through it: the gallery's form comes back bit for bit
    assert np.array_equal(as_gallery(stored, parts), stored)
    half = stored.astype(np.float16).astype(np.float32)  # as the database keeps them
    assert np.array_equal(as_gallery(half, parts), half)
