"""Re-ID retrieval metrics: the standard Market-1501 protocol and the seed's legacy top-10 protocol."""
import logging
from typing import Dict, Literal, Tuple

import numpy as np

__all__ = ['compute_distance_matrix', 'eval_market1501', 'eval_legacy', 'evaluate_rank']

_logger = logging.getLogger(__name__)


def compute_distance_matrix(qf: np.ndarray, gf: np.ndarray, metric: str = 'cosine') -> np.ndarray:
    """Distances (num_q, num_g) between query and gallery features.

    Args:
        qf: (num_q, D) features. gf: (num_g, D) features.
        metric: 'cosine' (1 - cosine similarity) or 'euclidean' (squared euclidean distance).

    Examples::
        >>> compute_distance_matrix(np.ones((10, 8)), np.ones((100, 8))).shape
        (10, 100)
    """
    if qf.ndim != 2 or gf.ndim != 2:
        raise ValueError(f'features must be 2-D, got {qf.shape} and {gf.shape}')
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f'feature dims differ: {qf.shape[1]} vs {gf.shape[1]}')
    qf, gf = qf.astype(np.float32), gf.astype(np.float32)
    if metric == 'cosine':
        qn = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gn = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
        return 1.0 - qn @ gn.T
    if metric == 'euclidean':
        return (qf ** 2).sum(1, keepdims=True) + (gf ** 2).sum(1)[None] - 2 * qf @ gf.T
    raise ValueError(f'unknown metric {metric!r}; choose from cosine, euclidean')


def _cmc_ap_inp(raw_cmc: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """Binary match vector in rank order -> (cmc, average precision, inverse negative penalty)."""
    cmc = np.minimum(raw_cmc.cumsum(), 1)
    hits = raw_cmc.cumsum()
    precision = hits / np.arange(1, len(raw_cmc) + 1)
    ap = float((precision * raw_cmc).sum() / raw_cmc.sum())
    last_hit = int(np.flatnonzero(raw_cmc)[-1])
    inp = float(hits[last_hit] / (last_hit + 1))
    return cmc, ap, inp


def eval_market1501(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                    g_camids: np.ndarray, max_rank: int = 50) -> Tuple[np.ndarray, float, float]:
    """Standard Market-1501 evaluation (as torchreid's ``eval_market1501``).

    Key: for each query, gallery images with the same pid and the same camera are discarded, and so are junk
    images (pid -1). Queries whose identity is absent from the remaining gallery are skipped. Ties in distance
    keep gallery order (stable sort). ``q_camids`` may be (num_q, K): a multi-shot query's K cameras, each of
    which is "the same camera".

    Returns:
        (cmc (max_rank,), mAP, mINP), all in [0, 1].
    """
    num_q, num_g = distmat.shape
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    q_cams = q_camids.reshape(num_q, -1)
    if num_g < max_rank:
        max_rank = num_g
        _logger.warning('gallery has only %d images; max_rank lowered to %d', num_g, num_g)
    indices = np.argsort(distmat, axis=1, kind='stable')
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_q):
        order = indices[q]
        remove = ((g_pids[order] == q_pids[q]) & np.isin(g_camids[order], q_cams[q])) | (g_pids[order] == -1)
        raw_cmc = matches[q][~remove]
        if not raw_cmc.any():
            continue  # the query identity does not appear in the gallery
        cmc, ap, inp = _cmc_ap_inp(raw_cmc)
        cmc = np.pad(cmc, (0, max(0, max_rank - len(cmc))), constant_values=1)  # fewer candidates than max_rank
        all_cmc.append(cmc[:max_rank])
        all_ap.append(ap)
        all_inp.append(inp)
    if not all_cmc:
        raise ValueError('no query identity appears in the gallery (from another camera)')
    return np.asarray(all_cmc, dtype=np.float64).mean(0), float(np.mean(all_ap)), float(np.mean(all_inp))


def eval_legacy(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, top_k: int = 10
                ) -> Tuple[np.ndarray, float]:
    """The seed's (LA-Transformer notebook's) protocol: top-10 search, no same-camera or junk removal.

    Rank-k counts a query when its pid is among the first k results; "AP" averages the precision at each hit within
    the top 10 over the hits found there (0 without a hit). It inflates numbers: report it only beside the standard
    protocol.

    Returns:
        (cmc (top_k,), mAP@top_k).
    """
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    top = np.argsort(distmat, axis=1, kind='stable')[:, :top_k]
    hits = (g_pids[top] == q_pids[:, None]).astype(np.float64)
    cmc = np.minimum(hits.cumsum(1), 1).mean(0)
    precision = hits.cumsum(1) / np.arange(1, hits.shape[1] + 1)
    n_hits = hits.sum(1)
    ap = np.where(n_hits > 0, (precision * hits).sum(1) / np.maximum(n_hits, 1), 0.0)
    return cmc, float(ap.mean())


def evaluate_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                  g_camids: np.ndarray, protocol: Literal['standard', 'legacy'] = 'standard') -> Dict[str, float]:
    """Both protocols behind one signature; returns rank1/5/10, mAP (and mINP for the standard one), in percent."""
    if protocol == 'standard':
        cmc, mAP, mINP = eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids)
        out = dict(mAP=100 * mAP, mINP=100 * mINP)
    elif protocol == 'legacy':
        cmc, mAP = eval_legacy(distmat, q_pids, g_pids)
        out = dict(mAP=100 * mAP)
    else:
        raise ValueError(f'unknown protocol {protocol!r}; choose from standard, legacy')
    for k in (1, 5, 10):
        out[f'rank{k}'] = 100 * float(cmc[min(k, len(cmc)) - 1])
    return out


def best_match_scores(sim: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                      g_camids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) for calibration: each query's best same-person score (another camera), and its best
    other-person score, what it would get were its person absent from the gallery."""
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    same = q_pids[:, None] == g_pids[None]
    valid = ~(same & (q_camids[:, None] == g_camids[None])) & (g_pids[None] != -1)
    pos = np.where(same & valid, sim, -np.inf).max(1)
    neg = np.where(~same & valid, sim, -np.inf).max(1)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError('need queries with both same-person and other-person gallery images to calibrate')
    return pos, neg


def calibrate_threshold(sim: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                        g_camids: np.ndarray) -> float:
    """A similarity below which a query should get "no match": the one that best separates the best-match scores
    of :func:`best_match_scores` (balanced accuracy)."""
    pos, neg = best_match_scores(sim, q_pids, g_pids, q_camids, g_camids)
    candidates = np.unique(np.concatenate([pos, neg]))
    accuracy = [(pos >= t).mean() + (neg < t).mean() for t in candidates]
    i = int(np.argmax(accuracy))
    # halfway to the next candidate, so the threshold is not glued to one sample
    return float(candidates[i] if i == 0 else (candidates[i] + candidates[i - 1]) / 2)


def fit_score_calibration(pos: np.ndarray, neg: np.ndarray, l2: float = 1e-2) -> Tuple[float, float]:
    """(a, b) of P(same person | cosine s) = 1 / (1 + exp(-(a s + b))), a logistic fit of best-match scores of the
    same person (``pos``) against other persons' (``neg``), the two classes weighted alike (so 0.5 sits at the
    balanced boundary). Fitted on standardised scores with an L2 penalty on the slope: cosines of one model crowd into
    a narrow band, and held-out identities are often separable, where the unpenalised fit has no finite answer. A
    slope <= 0 (a model whose right best matches score no higher than its wrong ones) is no calibration: the
    caller keeps cosines."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    mu, sd = s.mean(), max(s.std(), 1e-6)
    z = (s - mu) / sd
    slope, bias = 1.0, 0.0
    for _ in range(100):  # Newton's method on the weighted, penalised log-loss
        p = 1 / (1 + np.exp(-(slope * z + bias)))
        r = w * (p - y)
        grad = np.array([r @ z + l2 * slope, r.sum()])
        h = w * p * (1 - p)
        hess = np.array([[h @ (z * z) + l2, h @ z], [h @ z, h.sum() + 1e-12]])
        step = np.linalg.solve(hess, grad)
        slope, bias = slope - step[0], bias - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(slope / sd), float(bias - slope * mu / sd)
