"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), on precomputed distance matrices, and its Jaccard distance
of k-reciprocal neighbour sets on its own (the distance the unsupervised adaptation clusters on: reid.adapt)."""
import numpy as np

__all__ = ['re_ranking', 'jaccard_distance']


def _scaled_squares(dist: np.ndarray) -> np.ndarray:
    """Squared distances, each column divided by its largest, transposed: the paper's starting point."""
    original = np.power(np.maximum(dist.astype(np.float32), 0), 2)
    return (original / np.maximum(np.max(original, axis=0), 1e-12)).T


def _k_reciprocal_jaccard(original: np.ndarray, num_rows: int, k1: int, k2: int) -> np.ndarray:
    """Jaccard distances (num_rows, N) of k-reciprocal neighbour sets, for the first ``num_rows`` of the N points
    whose scaled distances (:func:`_scaled_squares`) ``original`` holds."""
    all_num = original.shape[0]
    k1 = min(k1, all_num - 1)
    V = np.zeros_like(original, dtype=np.float32)
    rank = np.argsort(original, axis=1, kind='stable').astype(np.int32)

    def k_reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, :k + 1]
        backward = rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    for i in range(all_num):
        expansion = k_reciprocal(i, k1)
        extended = expansion
        for candidate in expansion:
            cand_set = k_reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(cand_set, expansion)) > 2 / 3 * len(cand_set):
                extended = np.append(extended, cand_set)
        extended = np.unique(extended)
        weight = np.exp(-original[i, extended])
        V[i, extended] = weight / np.sum(weight)
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(all_num)])
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard = np.zeros((num_rows, all_num), dtype=np.float32)
    for i in range(num_rows):
        temp_min = np.zeros(all_num, dtype=np.float32)
        nonzero = np.where(V[i] != 0)[0]
        for j in nonzero:
            others = inv_index[j]
            temp_min[others] += np.minimum(V[i, j], V[others, j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    return jaccard


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (num_q, num_g) distances: Jaccard distance of k-reciprocal neighbour sets blended with the original.

    Memory is O((num_q + num_g)²): meant for evaluation-sized sets, not for a million-image gallery.
    """
    num_q = q_g_dist.shape[0]
    original = _scaled_squares(np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]))
    jaccard = _k_reciprocal_jaccard(original, num_q, k1, k2)
    final = jaccard * (1 - lambda_value) + original[:num_q] * lambda_value
    return final[:, num_q:]


def jaccard_distance(features: np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """(N, N) Jaccard distances of the k-reciprocal neighbour sets of unit-norm ``features`` (N, D), in [0, 1]
    (0 on the diagonal), symmetric: the distance Cluster Contrast and SpCL cluster with DBSCAN. O(N²) memory."""
    f = np.asarray(features, dtype=np.float32)
    euclidean = np.sqrt(np.maximum(2 - 2 * (f @ f.T), 0))
    jaccard = _k_reciprocal_jaccard(_scaled_squares(euclidean), len(f), k1, k2)
    jaccard = np.minimum(jaccard, jaccard.T)  # V's k2 expansion can leave it a hair asymmetric
    np.fill_diagonal(jaccard, 0)
    return np.clip(jaccard, 0, 1)
