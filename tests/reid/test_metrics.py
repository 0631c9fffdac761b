import numpy as np
import pytest

from reid.metrics import calibrate_threshold, compute_distance_matrix, eval_legacy, eval_market1501, evaluate_rank
from tests.conftest import tiny_model


def _reference_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid's eval_market1501 algorithm, written out per query (numpy ranking, stable on ties)."""
    cmcs, aps = [], []
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind='stable')
        keep = [g for g in order if not ((g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q]) or g_pids[g] == -1)]
        match = np.array([g_pids[g] == q_pids[q] for g in keep], dtype=float)
        if match.sum() == 0:
            continue
        cmc = np.minimum(np.cumsum(match), 1)
        cmcs.append(np.pad(cmc, (0, max(0, max_rank - len(cmc))), constant_values=1)[:max_rank])
        precision = np.cumsum(match) / np.arange(1, len(match) + 1)
        aps.append((precision * match).sum() / match.sum())
    return np.mean(cmcs, 0), np.mean(aps)


def test_hand_computed_same_camera_removal_and_junk():
    # one query, pid 1 camera 1; gallery ranked by distance:
    #   g0 pid 1 cam 1 (same camera: removed), g1 pid -1 (junk: removed), g2 pid 2, g3 pid 1 cam 2, g4 pid 3,
    #   g5 pid 1 cam 3
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    g_pids = np.array([1, -1, 2, 1, 3, 1])
    g_cams = np.array([1, 2, 2, 2, 1, 3])
    cmc, mAP, mINP = eval_market1501(distmat, np.array([1]), g_pids, np.array([1]), g_cams, max_rank=4)
    # kept order: pid2, pid1, pid3, pid1 -> hits at ranks 2 and 4
    assert cmc.tolist() == [0, 1, 1, 1]
    assert mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert mINP == pytest.approx(2 / 4)


def test_ties_keep_gallery_order():
    distmat = np.array([[0.5, 0.5, 0.5]])
    cmc, mAP, _ = eval_market1501(distmat, np.array([7]), np.array([3, 7, 7]), np.array([0]), np.array([1, 1, 1]),
                                  max_rank=3)
    assert cmc.tolist() == [0, 1, 1]
    assert mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_queries_without_a_true_match_are_skipped_and_all_invalid_raises():
    distmat = np.array([[0.1, 0.2], [0.3, 0.1]])
    q_pids, g_pids = np.array([1, 9]), np.array([1, 2])
    cmc, mAP, _ = eval_market1501(distmat, q_pids, g_pids, np.array([0, 0]), np.array([1, 1]), max_rank=2)
    assert cmc.tolist() == [1, 1] and mAP == 1.0
    with pytest.raises(ValueError, match='no query'):
        eval_market1501(distmat, q_pids, g_pids, np.array([1, 1]), np.array([1, 1]), max_rank=2)


def test_matches_the_reference_algorithm_on_random_data():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 10, 30), np.concatenate([rng.integers(0, 10, 200), [-1] * 5])
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 205)
    distmat = np.round(rng.random((30, 205)), 2)  # rounding makes ties
    cmc, mAP, _ = eval_market1501(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    ref_cmc, ref_map = _reference_market(distmat, q_pids, g_pids, q_cams, g_cams, 20)
    assert np.allclose(cmc, ref_cmc) and mAP == pytest.approx(ref_map)


def test_legacy_protocol_counts_same_camera_and_averages_over_hits_in_top10():
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    # g0 same pid same camera: the legacy protocol keeps it (which is why it inflates numbers)
    cmc, ap = eval_legacy(distmat, np.array([1]), np.array([1, 2, 1, 3]))
    assert cmc[:4].tolist() == [1, 1, 1, 1]
    assert ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    cmc, ap = eval_legacy(distmat, np.array([5]), np.array([1, 2, 1, 3]))
    assert cmc.max() == 0 and ap == 0


def test_evaluate_rank_reports_percentages():
    distmat = np.array([[0.2, 0.1]])
    r = evaluate_rank(distmat, np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1]))
    assert r['rank1'] == 0 and r['rank5'] == 100 and r['mAP'] == pytest.approx(50)
    with pytest.raises(ValueError, match='legacy'):
        evaluate_rank(distmat, np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1]), protocol='x')


def test_distance_matrix():
    qf, gf = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]])
    assert np.allclose(compute_distance_matrix(qf, gf), [[0.0, 1.0]])
    assert np.allclose(compute_distance_matrix(qf, gf, 'euclidean'), [[1.0, 2.0]])
    with pytest.raises(ValueError, match='cosine'):
        compute_distance_matrix(qf, gf, 'manhattan')
    with pytest.raises(ValueError, match='dims'):
        compute_distance_matrix(qf, np.ones((2, 3)))


def test_threshold_separates_present_from_absent_identities():
    # query 0 (pid 1): same person 0.9, others 0.3; query 1 (pid 2): same person 0.8, others 0.5
    sim = np.array([[0.9, 0.3], [0.5, 0.8]])
    t = calibrate_threshold(sim, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([1, 1]))
    assert 0.5 < t <= 0.8


def test_score_calibration_is_monotone_spreads_and_centres_on_the_boundary():
    from reid.matching import ScoreCalibration
    from reid.metrics import fit_score_calibration
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.97, 0.004, 300), rng.normal(0.955, 0.004, 900)  # crowded cosines, as models give
    calib = ScoreCalibration(*fit_score_calibration(pos, neg))
    grid = np.linspace(0.9, 1.0, 101)
    assert (np.diff(calib(grid)) > 0).all()
    assert np.median(calib(pos)) > 0.8 and np.median(calib(neg)) < 0.2  # right and wrong matches far apart
    assert abs(-calib.b / calib.a - 0.9625) < 0.002  # p = 0.5 halfway, the classes weighted alike
    separable = ScoreCalibration(*fit_score_calibration(np.array([0.99, 0.98]), np.array([0.5, 0.4])))
    assert np.isfinite([separable.a, separable.b]).all() and separable(0.99) > 0.9 > 0.1 > separable(0.5)
    assert ScoreCalibration.from_record(calib.record()) == calib and ScoreCalibration.from_record(None) is None


def test_a_model_whose_wrong_matches_score_higher_gets_no_calibration(monkeypatch):
    import reid.engine
    from reid.metrics import fit_score_calibration
    a, _ = fit_score_calibration(np.array([0.5, 0.6, 0.55]), np.array([0.8, 0.9, 0.85]))
    assert a < 0  # the fit says so; calibrate_model then records none
    monkeypatch.setattr(reid.engine, 'extract_features', lambda m, records, *args, **kw: records)
    sim_q = (np.eye(2, dtype=np.float32), np.array([1, 2]), np.array([0, 0]))
    gallery = (np.array([[0.0, 1.0], [1.0, 0.0]], np.float32), np.array([1, 2]), np.array([1, 1]))  # crossed
    out = reid.engine.calibrate_model(tiny_model(), (sim_q, gallery))  # a model without the visibility head
    assert 'score_calibration' not in out and 'min_score' in out
