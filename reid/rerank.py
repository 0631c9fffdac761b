"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), on precomputed distance matrices."""
import numpy as np

__all__ = ['re_ranking']


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (num_q, num_g) distances: Jaccard distance of k-reciprocal neighbour sets blended with the original.

    Memory is O((num_q + num_g)²): meant for evaluation-sized sets, not for a million-image gallery.
    """
    num_q, num_g = q_g_dist.shape
    original = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32)
    original = np.power(np.maximum(original, 0), 2)
    original = (original / np.max(original, axis=0)).T
    all_num = num_q + num_g
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
    original = original[:num_q]
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(all_num)])
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard = np.zeros((num_q, all_num), dtype=np.float32)
    for i in range(num_q):
        temp_min = np.zeros(all_num, dtype=np.float32)
        nonzero = np.where(V[i] != 0)[0]
        for j in nonzero:
            others = inv_index[j]
            temp_min[others] += np.minimum(V[i, j], V[others, j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, num_q:]
