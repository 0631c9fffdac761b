"""Who is who after people cross: ByteTrack (video.track) follows boxes by motion only, so two people who meet are
one blob for a few frames and may walk away with each other's ids. This module keeps each track's look (colour
histograms of its upper and lower body, from frames where no other box touches it) and, once a group of tracks
that touched have all come apart, gives the ids back by look: the assignment of the looks from before to the boxes
after that costs least (scipy's linear_sum_assignment), if it beats keeping the tracker's ids by a margin.

Nothing here is a tracker: it renames the tracker's ids. ``trackers``' own BoT-SORT associates by IoU only (no
appearance), and DeepSORT-style association would need a Re-ID forward pass of every box of every frame; these
histograms cost tens of microseconds a box.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ['appearance', 'look_distance', 'CrossingResolver']

_BANDS = ((0.15, 0.5), (0.5, 0.95))  # shares of the box height: upper body, lower body (head and feet left out)
_INNER = 0.5  # share of the box width around its centre (the figure, little background)
_HUE_BINS, _SAT_BINS = 12, 4
_SIZE = (12, 32)  # (w, h) the box is shrunk to first: colour, not detail


def appearance(image: np.ndarray, box) -> Optional[np.ndarray]:
    """A box's look: per body band, the square root of its hue-saturation histogram (so the Euclidean distance of
    two looks is a Hellinger distance); None for a box with no pixels in the frame. ``image``: (H, W, 3) uint8
    RGB; ``box``: (x, y, w, h) in pixels."""
    x, y, w, h = (float(v) for v in box)
    height, width = image.shape[:2]
    x0 = int(max(0, np.floor(x + w * (1 - _INNER) / 2)))
    x1 = int(min(width, np.ceil(x + w * (1 + _INNER) / 2)))
    y0, y1 = int(max(0, np.floor(y))), int(min(height, np.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    small = cv2.resize(image[y0:y1, x0:x1], _SIZE, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    parts = []
    for top, bottom in _BANDS:
        band = hsv[int(top * _SIZE[1]):int(bottom * _SIZE[1])]
        hist = cv2.calcHist([band], [0, 1], None, [_HUE_BINS, _SAT_BINS], [0, 180, 0, 256]).ravel()
        parts.append(np.sqrt(hist / max(float(hist.sum()), 1.0)))
    return np.concatenate(parts).astype(np.float32)


def look_distance(a: np.ndarray, b: np.ndarray) -> float:
    """0 (the same colours) .. 1 (nothing in common): the root mean square over body bands of their Hellinger
    distances."""
    return float(np.linalg.norm(a - b) / np.sqrt(2 * len(_BANDS)))


def _touch(a, b, margin: float) -> bool:
    """Whether two (x, y, w, h) boxes, each grown by ``margin`` of its width on every side, overlap."""
    ga, gb = margin * a[2], margin * b[2]
    return (a[0] - ga < b[0] + b[2] + gb and b[0] - gb < a[0] + a[2] + ga
            and a[1] - ga < b[1] + b[3] + gb and b[1] - gb < a[1] + a[3] + ga)


@dataclass
class _Id:
    """One output id: its look from before its latest contact, and where it was last seen."""
    look: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None
    frame: int = -1
    group: Optional[int] = None  # the contact group it is in, until that is resolved
    apart_since: Optional[int] = None  # the first frame of its latest run of frames apart and steady


@dataclass
class CrossingResolver:
    """Renames a tracker's ids so each stays with the person it had before people met (module docstring).

    Args:
        max_lost_frames: an id unseen for longer is forgotten (the tracker's own memory of lost tracks).
        margin: how much better (in summed look distance) giving ids back must be than keeping the tracker's.
        max_distance: a look farther than this from every look before the contact keeps its tracker id (someone
            new, not one of the group): with the margin, a new box takes a hidden member's id below
            ``max_distance - margin`` (0.40).
        split_distance: a box this far from its own id's look is someone else (one person left where another came
            in, and the tracker kept the id): it gets a new id. The tracker's own pairing is scaled by
            ``max_distance / split_distance`` against the others; with the margin, a box alone in its group is
            split off beyond ``split_distance * (1 + margin / max_distance)`` (0.89).
        touch: boxes grown by this share of their width that overlap touch.
        arrive: a box that grows or shrinks (someone going behind something, or coming out) is in one group with
            the boxes this close (grown by this share of their width).
        settle, steady: a box is steady once its height has varied by at most ``steady`` over ``settle`` frames
            in a row; ids are given back and looks learnt only from steady boxes (a box that is not is in a group,
            of one at least). (Boxes cut by the frame border were tried as not steady too: no better on the
            tuning video, worse on the benchmark's.)
        update: weight of the newest frame in a look's running mean, from frames where nothing touches the box.

    Members of a group that have been apart for ``max_lost_frames`` while others of it still touch (two people
    standing together) are settled among themselves and leave it.
    """
    max_lost_frames: int
    margin: float = 0.05
    max_distance: float = 0.45
    split_distance: float = 0.8
    touch: float = 0.1
    arrive: float = 1.0
    settle: int = 3
    steady: float = 0.1
    update: float = 0.2
    _out: Dict[int, int] = field(default_factory=dict)  # tracker id -> output id
    _ids: Dict[int, _Id] = field(default_factory=dict)  # output id -> its state
    _groups: Dict[int, Set[int]] = field(default_factory=dict)  # contact group -> output ids
    _heights: Dict[int, list] = field(default_factory=dict)  # tracker id -> its box heights, (frame, h), latest
    _next: itertools.count = field(default_factory=lambda: itertools.count(1))
    _group_keys: itertools.count = field(default_factory=itertools.count)
    _frame: int = 0
    swaps: int = 0  # how many times ids were given back or split off (for the docs' figures)

    def __call__(self, tracked: np.ndarray, image: np.ndarray) -> np.ndarray:
        """One frame (every frame, in order): ``tracked`` (M, 6) of (tracker id, x, y, w, h, conf) -> the same
        rows with output ids; ``image`` the frame, (H, W, 3) uint8 RGB."""
        self._frame += 1
        frame = self._frame
        for gone in [o for o, s in self._ids.items() if frame - s.frame > self.max_lost_frames]:
            self._forget(gone)
        for raw in [r for r, h in self._heights.items() if frame - h[-1][0] > self.max_lost_frames]:
            del self._heights[raw]  # the tracker has given the track up: its id never comes back
            self._out.pop(raw, None)
        rows = np.array(tracked, dtype=np.float64, copy=True).reshape(-1, 6)
        for raw in rows[:, 0].astype(int):
            if raw not in self._out:
                self._out[raw] = next(self._next)
        ids = [self._out[int(r)] for r in rows[:, 0]]
        boxes = rows[:, 1:5]
        present = set(ids)
        lost = [o for o, s in self._ids.items() if o not in present and s.box is not None]
        isolated = []
        for o in ids:
            self._ids.setdefault(o, _Id())
        others = [(ids[m], boxes[m]) for m in range(len(ids))] + [(l, self._ids[l].box) for l in lost]
        for n, o in enumerate(ids):
            heights = self._heights.setdefault(int(rows[n, 0]), [])
            heights.append((frame, float(boxes[n][3])))
            del heights[:-self.settle]
            settled = (len(heights) == self.settle and heights[0][0] == frame - self.settle + 1
                       and max(h for _, h in heights) <= (1 + self.steady) * min(h for _, h in heights))
            touching = [m for m, other in others if m != o and _touch(boxes[n], other, self.touch)]
            if not settled:
                # a box that grows or shrinks is coming out from behind something, or going behind it: whoever is
                # near may come out with its id
                touching += [m for m, other in others
                             if m != o and m not in touching and _touch(boxes[n], other, self.arrive)]
            if touching or not settled:
                self._join([o] + touching)  # a group of one too: its look waits until its box is steady
            else:
                isolated.append(n)
        apart = set(ids[n] for n in isolated)
        for n, o in enumerate(ids):
            state = self._ids[o]
            state.box, state.frame = boxes[n].copy(), frame
            state.apart_since = (state.apart_since or frame) if o in apart else None
        for o in lost:
            self._ids[o].apart_since = None
        looks = {n: appearance(image, boxes[n]) for n in isolated}
        for group in list(self._groups):
            members = self._groups.get(group)
            if not members:
                continue
            shown = [o for o in members if o in present]
            # all of the group that is in view has come apart, and a hidden member (still inside another's blob, or
            # gone) is waited for unless a box without a look of its own (a new track) may be it
            if shown and all(o in apart for o in shown) and (
                    len(shown) == len(members) or any(self._ids[o].look is None for o in shown)):
                self._resolve(group, set(members), ids, looks, rows)
                continue
            free = {o for o in shown if o in apart and frame - self._ids[o].apart_since >= self.max_lost_frames}
            if free:
                self._resolve(group, free, ids, looks, rows)
        ids = [self._out[int(r)] for r in rows[:, 0]]
        for n in isolated:
            state = self._ids.setdefault(ids[n], _Id(box=boxes[n].copy(), frame=frame))  # or new from _resolve
            look = looks.get(n)
            if state.group is None and look is not None:
                state.look = look if state.look is None else (1 - self.update) * state.look + self.update * look
        rows[:, 0] = ids
        return rows

    def _join(self, members: List[int]) -> None:
        groups = {self._ids[o].group for o in members} - {None}
        group = min(groups) if groups else next(self._group_keys)  # never a key a group still has
        merged = set(members)
        for g in groups:
            merged |= self._groups.pop(g)
        self._groups[group] = merged
        for o in merged:
            self._ids[o].group = group

    def _resolve(self, group: int, members: Set[int], ids: List[int], looks: Dict[int, Optional[np.ndarray]],
                 rows: np.ndarray) -> None:
        """Settle ``members`` of ``group`` (all of it, or those long apart: then no split), who then leave it."""
        rest = self._groups.pop(group) - members
        partial = bool(rest)
        if rest:
            self._groups[group] = rest
        for o in members:
            self._ids[o].group = None
        before = [o for o in members if self._ids[o].look is not None]
        after = [n for n, o in enumerate(ids) if o in members and looks.get(n) is not None]
        if not before or not after:
            return
        cost = np.array([[look_distance(self._ids[o].look, looks[n]) for n in after] for o in before])
        # the tracker's own pairing is trusted more: it is split only beyond split_distance, not max_distance
        for i, o in enumerate(before):
            for j, n in enumerate(after):
                if ids[n] == o:
                    cost[i, j] *= self.max_distance / self.split_distance
        # a box may also keep an id of its own (someone new, or a look that changed): at max_distance
        # and a look may go to no box (its person still hidden, or gone): rows looks then boxes' own, columns
        # boxes then looks' nowhere
        nb, na = len(before), len(after)
        padded = np.full((nb + na, na + nb), 1e6)  # a pair that cannot be
        padded[:nb, :na] = cost
        # half each: a look and a box are paired only if their distance is below max_distance
        padded[:nb, na:][np.eye(nb) > 0] = self.max_distance / 2
        padded[nb:, :na][np.eye(na) > 0] = self.max_distance / 2
        padded[nb:, na:] = 0.0
        rows_, cols = linear_sum_assignment(padded)
        best = float(padded[rows_, cols].sum())
        keep = 0.0
        for n in after:
            o = ids[n]
            keep += cost[before.index(o), after.index(n)] if o in before else self.max_distance / 2
        keep += self.max_distance / 2 * sum(o not in [ids[n] for n in after] for o in before)
        given = {}  # box index -> the output id whose look it has
        if best < keep - self.margin:
            for r, c in zip(rows_, cols):
                if r < nb and c < na:
                    given[after[c]] = before[r]
        else:
            given = {n: ids[n] for n in after if ids[n] in before}
        if partial:  # the look a box's id should have may be with the rest of the group: no split on half the facts
            taken = set(given.values())
            for n in after:
                if n not in given and ids[n] in before and ids[n] not in taken:
                    given[n] = ids[n]
        if all(ids[n] == o for n, o in given.items()) and all(n in given or ids[n] not in before for n in after):
            return
        self.swaps += 1
        for n, o in given.items():
            raw = int(rows[n, 0])
            for other, out in self._out.items():
                if out == o and other != raw:
                    self._out[other] = next(self._next)  # whoever had the id before gets a new one
            self._out[raw] = o
            state = self._ids[o]
            state.box, state.frame = rows[n, 1:5].copy(), self._frame
        for n in after:  # a box whose id went elsewhere, or whose look is not its id's, is someone new
            raw = int(rows[n, 0])
            if n not in given and (self._out[raw] in before or list(self._out.values()).count(self._out[raw]) > 1):
                self._out[raw] = next(self._next)
        mapped = set(self._out.values())
        for o in members - mapped:  # ids whose box went to another id
            if self._ids[o].look is None:
                self._forget(o)
            else:  # kept for a while as a look, not as a box standing where its box's new owner is
                self._ids[o].box = None

    def _forget(self, out: int) -> None:
        state = self._ids.pop(out)
        if state.group is not None and state.group in self._groups:
            self._groups[state.group].discard(out)
            if not self._groups[state.group]:
                del self._groups[state.group]
