"""Sightings to identities, offline: cluster the sightings' pooled vectors across cameras (scikit-learn's
agglomerative clustering) under hard constraints that no vector similarity can override.

Constraints (*cannot-link* pairs):
  * two sightings on the same camera that overlap in time are two people (a tracker gave them two tracks at once);
  * with ``min_travel_seconds``, two sightings on different cameras less than that apart (or overlapping) are two
    people: nobody is in two places at once, or gets from one camera to another faster (for cameras whose views do
    not overlap).
"""
from __future__ import annotations

import datetime as dt
from typing import Literal, Optional, Sequence

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from reid.matching import centre_by_camera

__all__ = ['cannot_link', 'link_sightings', 'CANNOT_LINK']

# the distance given to a cannot-link pair: with average linkage two clusters holding such a pair merge only if
# their mean distance stays under the threshold, i.e. never while they hold fewer than 1e9 / threshold pairs
CANNOT_LINK = 1e9


def cannot_link(cameras: Sequence[str], first_times: Sequence[dt.datetime], last_times: Sequence[dt.datetime],
                min_travel_seconds: Optional[float] = None) -> np.ndarray:
    """(n, n) bool: True where two sightings cannot be one person (the module's constraints); the diagonal False."""
    cams = np.asarray(cameras)
    first = np.array([t.timestamp() for t in first_times])
    last = np.array([t.timestamp() for t in last_times])
    gap = np.maximum(first[None, :] - last[:, None], first[:, None] - last[None, :])  # < 0: they overlap
    same = cams[:, None] == cams[None, :]
    forbidden = same & (gap <= 0)
    if min_travel_seconds is not None:
        forbidden |= ~same & (gap < min_travel_seconds)
    np.fill_diagonal(forbidden, False)
    return forbidden


def link_sightings(vectors: np.ndarray, cameras: Sequence[str], first_times: Sequence[dt.datetime],
                   last_times: Sequence[dt.datetime], *, threshold: float,
                   linkage: Literal['average', 'complete', 'single'] = 'average',
                   min_travel_seconds: Optional[float] = None, camera_centring: bool = False) -> np.ndarray:
    """Identity labels (n,) 0..k-1 for n sightings.

    Args:
        vectors: (n, D) one vector per sighting (its crops pooled, e.g. reid.matching.pool_parts); compared by
            cosine distance, 1 - cos, in 0..2.
        cameras, first_times, last_times: each sighting's camera and time range.
        threshold: clusters closer than this (by ``linkage``) merge; higher: fewer, larger identities.
        linkage: scikit-learn's; 'average' tolerates a few unlike views of one person, 'complete' none.
        min_travel_seconds: see the module docstring (None: no constraint between cameras).
        camera_centring: compare the vectors with each camera's mean taken out (reid.matching.centre_by_camera):
            clusters follow people, not the look of each camera (docs/benchmarks.md 9 measures it). The
            threshold is then on the centred vectors' distances, which no score calibration describes.

    The constraints hold for every result: a merge that would put a cannot-link pair in one identity never
    happens (checked, not only hoped for by the large distance).
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.empty(0, dtype=int)
    if n == 1:
        return np.zeros(1, dtype=int)
    if camera_centring:
        x = centre_by_camera(x, cameras).astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    distance = np.clip(1 - unit @ unit.T, 0, 2)
    forbidden = cannot_link(cameras, first_times, last_times, min_travel_seconds)
    distance[forbidden] = CANNOT_LINK
    np.fill_diagonal(distance, 0)
    labels = AgglomerativeClustering(n_clusters=None, metric='precomputed', linkage=linkage,
                                     distance_threshold=threshold).fit_predict(distance)
    together = labels[:, None] == labels[None, :]
    assert not (together & forbidden).any(), 'a cannot-link pair was merged'  # cannot happen below 1e9 / threshold
    return labels
