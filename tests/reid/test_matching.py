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
