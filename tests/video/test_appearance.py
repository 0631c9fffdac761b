"""Ids given back by look after people cross (video.appearance.CrossingResolver), on drawn frames where the
tracker's ids are scripted: kept, swapped, or a new id for someone who was hidden."""
import numpy as np
import pytest

from video.appearance import CrossingResolver, appearance, look_distance
from video.quality import covered_shares, crop_quality

W, H = 320, 200
RED, BLUE, GREEN, YELLOW = (200, 30, 30), (30, 40, 200), (30, 160, 60), (220, 200, 40)
WHITE, BLACK, ORANGE = (240, 240, 240), (20, 20, 20), (240, 140, 20)
PEOPLE = {'a': (RED, BLUE), 'b': (GREEN, YELLOW), 'c': (WHITE, BLACK), 'd': (ORANGE, BLACK)}  # upper, lower body


def frame(at):
    """A grey frame with people drawn at ``{name: x or (x, h)}`` (20 x 80 px boxes from y 60, of which the top
    ``h`` rows are in view: the rest behind an occluder), later ones in front."""
    image = np.full((H, W, 3), 128, np.uint8)
    for name, where in at.items():
        x, h = where if isinstance(where, tuple) else (where, 80)
        upper, lower = PEOPLE[name]
        image[60:100, x:x + 20] = upper
        image[100:140, x:x + 20] = lower
        image[60 + h:140, x:x + 20] = 90  # the occluder
    return image


def box(where):
    x, h = where if isinstance(where, tuple) else (where, 80)
    return [x, 60, min(20, W - x), h]  # cut by the frame's right border as a detector's box would be


def walk(resolver, script):
    """Feed ``script``: per frame {tracker id: (person, x)}; the output ids per frame as {person: output id}."""
    seen = []
    for step in script:
        image = frame({person: x for person, x in step.values()})
        rows = np.array([[raw, *box(x), 1.0] for raw, (_, x) in step.items()], np.float64).reshape(-1, 6)
        out = resolver(rows, image)
        assert len(set(out[:, 0].tolist())) == len(out), f'two boxes of one frame with one id: {out[:, 0]}'
        seen.append({step[int(raw)][0]: int(o) for raw, o in zip(rows[:, 0], out[:, 0])})
    return seen


def crossing(swap_after: bool, hide_b: bool = False):
    """a walks right from x 40, b left from x 260, 5 px a frame; they meet in the middle. The tracker's ids
    (1 for a, 2 for b) are swapped from the frame they part if ``swap_after``; with ``hide_b`` b has no box while
    they overlap (one blob) and comes back as a new tracker id 3."""
    script = []
    for t in range(45):
        xa, xb = 40 + 5 * t, 260 - 5 * t
        apart = abs(xa - xb) >= 20
        after = xa > xb
        step = {}
        if swap_after and after:
            step[1], step[2] = ('b', xb), ('a', xa)
        else:
            step[1] = ('a', xa)
            if not hide_b:
                step[2] = ('b', xb)
            elif apart:
                step[3 if after else 2] = ('b', xb)
        script.append(step)
    return script


def test_looks_tell_two_people_apart_and_one_from_itself():
    a, b = appearance(frame({'a': 40}), box(40)), appearance(frame({'b': 200}), box(200))
    moved = appearance(frame({'a': 120}), box(120))
    assert look_distance(a, moved) < 0.05 < 0.5 < look_distance(a, b) <= 1.0
    assert appearance(frame({}), [W + 5, 0, 10, 10]) is None  # outside the frame


def test_ids_swapped_by_the_tracker_at_a_crossing_are_given_back():
    resolver = CrossingResolver(max_lost_frames=20)
    seen = walk(resolver, crossing(swap_after=True))
    assert seen[0] == {'a': 1, 'b': 2}
    assert all(s == {'a': 1, 'b': 2} for s in seen[-5:]), seen[-5:]
    assert resolver.swaps == 1


def test_ids_the_tracker_kept_are_left_alone():
    resolver = CrossingResolver(max_lost_frames=20)
    seen = walk(resolver, crossing(swap_after=False))
    assert all(s == {'a': 1, 'b': 2} for s in seen)
    assert resolver.swaps == 0


def test_someone_hidden_by_a_crossing_who_comes_back_as_a_new_track_gets_their_id_back():
    resolver = CrossingResolver(max_lost_frames=20)
    seen = walk(resolver, crossing(swap_after=False, hide_b=True))
    assert seen[0] == {'a': 1, 'b': 2}
    assert seen[-1] == {'a': 1, 'b': 2}  # tracker id 3 is b
    assert resolver.swaps == 1


def test_a_newcomer_who_looks_like_nobody_in_the_group_keeps_a_new_id():
    resolver = CrossingResolver(max_lost_frames=20)
    script = [{1: ('a', 40 + 5 * t)} for t in range(10)]  # a alone, then b appears touching a, a new track
    script += [{1: ('a', 90 + 5 * t), 2: ('b', 110 + 5 * t + (30 if t > 2 else 0))} for t in range(8)]
    seen = walk(resolver, script)
    assert seen[-1] == {'a': 1, 'b': 2}
    assert resolver.swaps == 0


def test_a_crop_other_boxes_cover_is_worth_less():
    shares = covered_shares(np.array([[0, 0, 10, 10], [5, 0, 10, 10], [100, 100, 4, 4]]))
    np.testing.assert_allclose(shares, [0.5, 0.5, 0.0])
    pixels = frame({'a': 40})[60:140, 40:60]
    alone = crop_quality(pixels, box(40), W, H)
    assert crop_quality(pixels, box(40), W, H, covered=0.5) == pytest.approx(alone / 2)


def test_a_pair_standing_together_does_not_keep_others_who_passed_them_from_being_given_back():
    """c and d stand touching (their group never comes apart); a and b cross right in front of them, and the
    tracker swaps a and b: a and b, long apart again, are settled among themselves."""
    resolver = CrossingResolver(max_lost_frames=15)
    script = []
    for t in range(52):  # a and b in view to the end
        xa, xb = 30 + 5 * t, 270 - 5 * t
        swapped = xa > xb
        step = {3: ('c', 140), 4: ('d', 160)}
        if 0 <= xa < W:
            step[2 if swapped else 1] = ('a', xa)
        if 0 <= xb < W:
            step[1 if swapped else 2] = ('b', xb)
        script.append(step)
    seen = walk(resolver, script)
    assert len(set(seen[5].values())) == 4
    assert seen[-1] == seen[5], (seen[5], seen[-1])


def test_a_track_another_person_carries_on_is_split_and_everything_is_forgotten_once_they_are_gone():
    """a goes behind an occluder (less and less of a in view) and c comes out of it, and the tracker keeps id 1
    from one to the other: c gets an id of its own. After both are gone for longer than the tracker remembers,
    nothing of them is kept."""
    resolver = CrossingResolver(max_lost_frames=20)
    script = [{1: ('a', 100)} for _ in range(10)]
    script += [{1: ('a', (100, 80 - 8 * t))} for t in range(1, 8)]  # down to 24 rows in view
    script += [{1: ('c', (100, 24 + 8 * t))} for t in range(8)]  # c comes out, the same box for the tracker
    script += [{1: ('c', 100)} for _ in range(10)]
    seen = walk(resolver, script)
    assert seen[0] == {'a': 1} and seen[-1]['c'] not in (1, None)
    assert resolver.swaps == 1
    for _ in range(25):
        resolver(np.empty((0, 6)), frame({}))
    assert not (resolver._ids or resolver._groups or resolver._heights or resolver._out)
