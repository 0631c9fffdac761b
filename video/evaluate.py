"""Scores against ground truth: detection precision/recall, tracking MOTA/IDF1 (motmetrics: CLEAR-MOT and identity
metrics) and HOTA (trackers.eval, a port of TrackEval's), per camera.

Ground truth is ``{frame: (N, >= 6) of (id, x, y, w, h, conf, [visibility])}``. People hidden below
``min_visibility`` are not expected to be found: a box on one of them is neither a hit nor a false positive (as
the MOT Challenge evaluation does with its ignore regions), and missing them costs nothing.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import motmetrics as mm
import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment
from trackers.eval import compute_hota_metrics

__all__ = ['detection_scores', 'tracking_scores', 'identity_scores', 'visible_boxes', 'MIN_VISIBILITY', 'MIN_IOU']

MIN_VISIBILITY = 0.3  # a person with less of their figure in view is not expected to be detected
MIN_IOU = 0.5  # the MOT Challenge's match criterion

Boxes = Mapping[int, np.ndarray]


def visible_boxes(truth: Boxes, min_visibility: float = MIN_VISIBILITY) -> Dict[int, np.ndarray]:
    """The ground-truth rows of people at least ``min_visibility`` in view, for use as ideal detections."""
    out = {}
    for frame, rows in truth.items():
        rows = rows[_visibility(rows) >= min_visibility]
        if len(rows):
            out[frame] = rows
    return out


def _visibility(rows: np.ndarray) -> np.ndarray:
    return rows[:, 6] if rows.shape[1] > 6 else np.ones(len(rows))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of (x, y, w, h) boxes. (motmetrics 1.4's own iou_matrix calls np.asfarray,
    which NumPy 2 removed.)"""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return sv.box_iou_batch(np.concatenate([a[:, :2], a[:, :2] + a[:, 2:4]], 1),
                            np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], 1))


def _split(rows: np.ndarray, found: np.ndarray, min_visibility: float) -> Tuple[np.ndarray, np.ndarray]:
    """(ground truth to find, the found boxes that are not on a person too hidden to count). Found boxes are
    matched to all the ground truth at once first, so a box on a visible person in front of a hidden one stays."""
    hidden = _visibility(rows) < min_visibility
    if hidden.any() and len(found):
        iou = _iou(rows[:, 1:5], found[:, 1:5])
        r, c = linear_sum_assignment(-iou)
        on_hidden = c[(iou[r, c] >= MIN_IOU) & hidden[r]]
        found = np.delete(found, on_hidden, axis=0)
    return rows[~hidden], found


def detection_scores(truth: Boxes, detections: Boxes, min_visibility: float = MIN_VISIBILITY) -> Dict[str, float]:
    """Precision and recall of ``detections`` ``{frame: (M, >= 5) of (id, x, y, w, h, ...)}``: a one-to-one
    match per frame (Hungarian) at IoU >= 0.5."""
    hits = expected = found_total = 0
    for frame in set(truth) | set(detections):
        rows, found = _split(truth.get(frame, np.empty((0, 7))), detections.get(frame, np.empty((0, 6))),
                             min_visibility)
        expected += len(rows)
        found_total += len(found)
        if len(rows) and len(found):
            iou = _iou(rows[:, 1:5], found[:, 1:5])
            r, c = linear_sum_assignment(-iou)
            hits += int((iou[r, c] >= MIN_IOU).sum())
    return dict(precision=hits / max(found_total, 1), recall=hits / max(expected, 1), truth=expected,
                detections=found_total)


def tracking_scores(truth: Boxes, tracks: Boxes, min_visibility: float = MIN_VISIBILITY) -> Dict[str, float]:
    """MOTA, IDF1 and their parts (motmetrics), and HOTA, of ``tracks`` ``{frame: (M, >= 5) of (track_id, x, y, w,
    h, ...)}`` against ``truth``."""
    acc = mm.MOTAccumulator(auto_id=False)
    hota_gt, hota_found, hota_iou = [], [], []
    for frame in sorted(set(truth) | set(tracks)):
        rows, found = _split(truth.get(frame, np.empty((0, 7))), tracks.get(frame, np.empty((0, 6))), min_visibility)
        iou = _iou(rows[:, 1:5], found[:, 1:5])
        hota_gt.append(rows[:, 0].astype(int))
        hota_found.append(found[:, 0].astype(int))
        hota_iou.append(iou)
        distance = 1 - iou
        distance[distance > 1 - MIN_IOU] = np.nan  # motmetrics' "cannot match"
        acc.update(rows[:, 0].astype(int), found[:, 0].astype(int), distance, frameid=frame)
    names = ['mota', 'idf1', 'idp', 'idr', 'num_switches', 'num_false_positives', 'num_misses', 'num_objects',
             'num_unique_objects', 'mostly_tracked']
    summary = mm.metrics.create().compute(acc, metrics=names, name='camera')
    scores = {name: float(summary[name].iloc[0]) for name in names}
    scores['hota'] = float(compute_hota_metrics(hota_gt, hota_found, hota_iou)['HOTA'])
    return scores


def identity_scores(truth: Mapping[int, Boxes], tracks: Mapping[int, Boxes], person_of_walk: Mapping[int, int],
                    identity_of_track: Mapping[tuple, int], min_visibility: float = MIN_VISIBILITY
                    ) -> Dict[str, float]:
    """Cross-camera identity IDF1 (and IDP, IDR): every camera's frames scored as one sequence, ground truth by
    person (global id), tracked boxes by the identity their track was linked to.

    Args:
        truth: ``{camera: {frame: ground-truth rows with walk ids}}``.
        tracks: ``{camera: {frame: (M, >= 5) of (track_id, x, y, w, h, ...)}}``.
        person_of_walk: walk id -> person id.
        identity_of_track: (camera, track_id) -> identity; a track without one (too short to be a sighting) counts
            as an identity of its own.
    """
    acc = mm.MOTAccumulator(auto_id=False)
    identity_of_track = dict(identity_of_track)  # tracks without an identity get one here
    cameras = sorted(set(truth) | set(tracks))
    own = -1
    for index, cam in enumerate(cameras):
        t, h = truth.get(cam, {}), tracks.get(cam, {})
        for frame in sorted(set(t) | set(h)):
            rows, found = _split(t.get(frame, np.empty((0, 7))), h.get(frame, np.empty((0, 6))), min_visibility)
            people = [person_of_walk[int(w)] for w in rows[:, 0]]
            identities = []
            for track_id in found[:, 0].astype(int):
                identity = identity_of_track.get((cam, int(track_id)))
                if identity is None:
                    identity = identity_of_track.setdefault((cam, int(track_id)), own)
                    own -= 1
                identities.append(identity)
            distance = 1 - _iou(rows[:, 1:5], found[:, 1:5])
            distance[distance > 1 - MIN_IOU] = np.nan
            acc.update(people, identities, distance, frameid=index * 10_000_000 + frame)
    names = ['idf1', 'idp', 'idr', 'num_unique_objects']
    summary = mm.metrics.create().compute(acc, metrics=names, name='all')
    return {name: float(summary[name].iloc[0]) for name in names}
