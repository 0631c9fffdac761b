"""Matching on LA's row parts, in numpy (the service imports it without torch).

A retrieval vector is ``parts`` unit-length row vectors, each scaled by 1/sqrt(parts) and concatenated: its inner
product with another is the mean of the per-part cosines.

With the visibility head, the vectors the service indexes have part p scaled by its visibility v_p as well
(:func:`scale_parts`): the inner product of a query's and a gallery image's is then sum_p v_qp v_gp cos_p / parts,
the numerator of the mutually-visible-part score, and each vector carries its own visibilities in its part norms
(:func:`part_visibility`), so the exact score of a candidate needs no other store (:func:`rescore_mutual`).
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ['pool_parts', 'pool_visible', 'multi_shot_queries', 'mutual_visibility_scores', 'scale_parts',
           'plain_parts', 'part_visibility', 'rescore_mutual', 'part_cosines', 'centre_by_camera', 'ScoreCalibration']


@dataclass(frozen=True)
class ScoreCalibration:
    """A score a person can read: P(same person | cosine) = 1 / (1 + exp(-(a cosine + b))), fitted on held-out
    training identities (reid.metrics.fit_score_calibration) and stored in the checkpoint (``score_calibration``)
    beside the no-match threshold."""
    a: float
    b: float

    def __call__(self, cosine):
        return 1 / (1 + np.exp(-(self.a * np.asarray(cosine, np.float64) + self.b)))

    def record(self) -> Dict[str, Any]:
        return {'kind': 'logistic', 'a': self.a, 'b': self.b}

    @classmethod
    def from_record(cls, record: Optional[Dict[str, Any]]) -> Optional['ScoreCalibration']:
        """None for a checkpoint without one (its scores stay cosines)."""
        if not record or record.get('kind') != 'logistic':
            return None
        return cls(float(record['a']), float(record['b']))


def centre_by_camera(features: np.ndarray, cameras) -> np.ndarray:
    """``features`` (N, D) with each camera's mean feature taken out (``cameras[i]``: row i's camera), rows made
    unit length again, so that what stays is the person, not the look of the camera that saw them (its light, its
    background). A copy; unchanged (but for the copy) with fewer than two cameras."""
    raw = np.asarray(features, dtype=np.float32)
    cams = np.asarray(cameras)
    if len(cams) != len(raw):
        raise ValueError(f'{len(cams)} cameras for {len(raw)} features')
    out = raw.copy()
    if len(np.unique(cams)) < 2:
        return out
    for cam in np.unique(cams):
        out[cams == cam] -= raw[cams == cam].mean(0)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def pool_parts(embeddings: np.ndarray, parts: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Several crops of one person -> one query (``parts * D``,): per part the (``weights``-weighted, (n, parts))
    mean of the crops' part vectors, made unit length again and scaled as the model scales them. A part no crop
    sees (all weights 0) stays zero."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] % parts:
        raise ValueError(f'expected (n >= 1, parts * D) embeddings with {parts} parts, got {x.shape}')
    rows = x.reshape(x.shape[0], parts, -1)
    w = np.ones(rows.shape[:2], np.float32) if weights is None else np.asarray(weights, np.float32)
    pooled = (rows * w[..., None]).sum(0)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    pooled = np.where(norms > 0, pooled / np.maximum(norms, 1e-12), 0.0) / np.sqrt(parts)
    return pooled.reshape(-1).astype(np.float32)


def multi_shot_queries(features: np.ndarray, pids: np.ndarray, camids: np.ndarray, shots: int,
                       parts: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-shot queries from single crops: each identity's crops, in split order, in groups of ``shots`` (a
    remainder smaller than ``shots`` is left out, and so are identities with fewer crops), each group pooled
    (:func:`pool_visible`: features scaled by their visibilities pool with them as weights). Returns (features (M,
    D), pids (M,), cameras (M, shots): each query's cameras, for the standard protocol's same-camera removal)."""
    pids, camids = np.asarray(pids), np.asarray(camids)
    groups = []
    for pid in dict.fromkeys(pids.tolist()):  # identities in the order they first appear
        idx = np.flatnonzero(pids == pid)
        groups += [idx[i:i + shots] for i in range(0, len(idx) - shots + 1, shots)]
    if not groups:
        raise ValueError(f'no identity has {shots} query crops')
    pooled = np.stack([pool_visible(features[g], parts) for g in groups])
    return pooled, np.array([pids[g[0]] for g in groups]), np.stack([camids[g] for g in groups])


def mutual_visibility_scores(qf: np.ndarray, gf: np.ndarray, q_vis: np.ndarray, g_vis: np.ndarray, parts: int,
                             chunk: int = 256) -> np.ndarray:
    """score(q, g) = sum_p v_qp v_gp cos_p / sum_p v_qp v_gp: the part cosines averaged over the parts both images
    show (BPBReID's mutually visible parts, VPM's visibility weights), (nq, ng). Visibilities (n, parts) in [0, 1];
    with all ones it is the plain inner product of the embeddings."""
    nq, ng = len(qf), len(gf)
    q = np.asarray(qf, np.float32).reshape(nq, parts, -1) * np.sqrt(parts)  # unit part vectors
    g = np.asarray(gf, np.float32).reshape(ng, parts, -1) * np.sqrt(parts)
    vq, vg = np.asarray(q_vis, np.float32), np.asarray(g_vis, np.float32)
    out = np.empty((nq, ng), np.float32)
    for start in range(0, nq, chunk):  # (chunk, ng, parts) part cosines at a time
        cos = np.einsum('qpd,gpd->qgp', q[start:start + chunk], g)
        w = vq[start:start + chunk, None, :] * vg[None]
        out[start:start + chunk] = (w * cos).sum(2) / np.maximum(w.sum(2), 1e-6)
    return out


MIN_VISIBILITY = 1e-3  # float16 storage keeps ~3 digits of a part scaled this far down


def _parts(vectors: np.ndarray, parts: int) -> np.ndarray:
    x = np.asarray(vectors, np.float32)
    if x.ndim != 2 or x.shape[1] % parts:
        raise ValueError(f'expected (n, parts * D) vectors with {parts} parts, got {x.shape}')
    return x.reshape(x.shape[0], parts, -1)


def scale_parts(embeddings: np.ndarray, visibility: np.ndarray, parts: int) -> np.ndarray:
    """(n, parts * D) embeddings -> each part made unit length, scaled by its visibility (n, parts) and by
    1/sqrt(parts): the vectors of mutually-visible-part search (all visibilities 1: the plain embedding).
    Visibilities are floored at ``MIN_VISIBILITY``, so that every part keeps its direction (the plain score stays
    recoverable from the vector, :func:`part_cosines`)."""
    rows = _parts(embeddings, parts)
    norms = np.linalg.norm(rows, axis=2, keepdims=True)
    unit = rows / np.maximum(norms, 1e-12)
    v = np.clip(np.asarray(visibility, np.float32), MIN_VISIBILITY, 1)[..., None]
    return (unit * v / np.sqrt(parts)).reshape(len(rows), -1).astype(np.float32)


def plain_parts(vectors: np.ndarray, parts: int) -> np.ndarray:
    """Scaled vectors with every part's visibility set to 1 again: the plain embedding's form."""
    return scale_parts(vectors, np.ones((len(vectors), parts), np.float32), parts)


def part_visibility(vectors: np.ndarray, parts: int) -> np.ndarray:
    """The visibilities (n, parts) that :func:`scale_parts` put into ``vectors``: each part's norm x sqrt(parts)
    (1 for a plain embedding)."""
    return np.clip(np.linalg.norm(_parts(vectors, parts), axis=2) * np.sqrt(parts), 0, 1)


def as_gallery(vectors: np.ndarray, parts: int) -> np.ndarray:
    """Scaled crops (:func:`scale_parts`) as the gallery stores them: each divided by its mean part visibility, so
    that the index's inner product with a query, sum_p v_qp v_gp cos_p / (parts mean_p v_gp), is the
    mutually-visible-part score itself for a fully visible query, and close to it otherwise. Ranked by the plain
    numerator instead, images that show little lose to every image that shows much: the exact re-score then never
    sees the best matches among its candidates. The score's ratio does not change with the scale of either side,
    so the re-score is exact all the same (:func:`part_weights`). Idempotent: vectors in the gallery's form
    already (mean part weight 1, to float16's precision) come back unchanged, so stored vectors of either form can
    pass through it."""
    x = np.asarray(vectors, np.float32)
    mean = part_weights(x, parts).mean(1, keepdims=True)
    mean = np.where(np.abs(mean - 1) < 1e-2, 1.0, np.maximum(mean, 1e-6))
    return (x / mean).astype(np.float32)


def part_weights(vectors: np.ndarray, parts: int) -> np.ndarray:
    """Each part's weight (n, parts) in scaled vectors of any scale (a query's or the gallery's form): its norm x
    sqrt(parts), unclipped; proportional to the visibilities, which is all the re-score's ratio needs."""
    return np.linalg.norm(_parts(vectors, parts), axis=2) * np.sqrt(parts)


def as_query(vectors: np.ndarray, parts: int) -> np.ndarray:
    """Stored gallery vectors (:func:`as_gallery`, or scaled crops) back in a query's form: each divided by its
    largest part weight, so that its best-shown part counts as fully visible."""
    x = np.asarray(vectors, np.float32)
    return (x / np.maximum(part_weights(x, parts).max(1, keepdims=True), 1e-6)).astype(np.float32)


def rescore_mutual(inner: np.ndarray, query_visibility: np.ndarray, candidate_visibility: np.ndarray) -> np.ndarray:
    """The mutually-visible-part score of candidates from the index's inner products: ``inner`` (n,) of a scaled
    query with scaled candidates is sum_p v_qp v_gp cos_p / parts, so the score is parts * inner / sum_p v_qp v_gp
    (equal to :func:`mutual_visibility_scores`). Visibilities: the query's (parts,), the candidates' (n, parts), or
    any multiple of either (:func:`part_weights` of the gallery's form)."""
    q = np.asarray(query_visibility, np.float32)
    weight = np.asarray(candidate_visibility, np.float32) @ q
    return (len(q) * np.asarray(inner, np.float32) / np.maximum(weight, 1e-6)).astype(np.float32)


def part_cosines(query: np.ndarray, candidates: np.ndarray, parts: int) -> np.ndarray:
    """The plain score (the mean of the part cosines, visibility ignored) of candidates (n, parts * D) against a
    query (parts * D,), from vectors scaled or not."""
    q, g = _parts(np.asarray(query)[None], parts)[0], _parts(candidates, parts)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=2, keepdims=True), 1e-12)
    return np.einsum('pd,npd->n', q, g).astype(np.float32) / parts


def pool_visible(vectors: np.ndarray, parts: int) -> np.ndarray:
    """Several scaled crops of one person (n, parts * D) -> one scaled query (parts * D,): per part the crops'
    directions averaged with their visibilities as weights (:func:`pool_parts`), its visibility the best any crop
    has (the group sees a part when one of its crops does). Plain embeddings: :func:`pool_parts`."""
    pooled = pool_parts(vectors, parts)  # the scaled parts carry their visibilities as weights
    return scale_parts(pooled[None], part_visibility(vectors, parts).max(0)[None], parts)[0]
