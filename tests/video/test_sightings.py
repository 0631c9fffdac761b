import datetime as dt

import numpy as np
import pytest

from video import Sighting, VideoError, sightings_from_video, write_mot
from video.evaluate import _iou, visible_boxes


def gt_boxes(truth):
    """Ground truth of the people in view, as a user's detector would give them (MOT rows, ids kept)."""
    return {f: rows[:, :6] for f, rows in visible_boxes(truth).items()}


def matched_walk(sighting: Sighting, truth) -> int:
    """The walk most of the sighting's crops lie on (IoU >= 0.5 with its ground-truth box)."""
    votes = []
    for crop in sighting.crops:
        rows = truth[crop.frame + 1]
        iou = _iou(np.array([crop.box]), rows[:, 1:5])[0]
        votes.append(int(rows[iou.argmax(), 0]) if iou.max() >= 0.5 else 0)
    return max(set(votes), key=votes.count)


def test_one_sighting_per_walk_with_its_best_crops(short_videos):
    _, videos, start, walks, truth = short_videos
    for cam, path in videos.items():
        given = gt_boxes(truth[cam])
        sightings = list(sightings_from_video(path, f'cam{cam}', start, given, max_crops=5))
        walked = {int(r[0]) for rows in given.values() for r in rows}
        assert sorted(matched_walk(s, truth[cam]) for s in sightings) == sorted(walked)
        for s in sightings:
            assert s.camera_id == f'cam{cam}' and s.video == str(path)
            assert 1 <= len(s.crops) <= 5
            qualities = [c.quality for c in s.crops]
            assert qualities == sorted(qualities, reverse=True) and all(0 <= q <= 1 for q in qualities)
            assert s.first_time <= min(c.time for c in s.crops) <= max(c.time for c in s.crops) <= s.last_time
            assert s.frames == round((s.last_time - s.first_time).total_seconds() * 10) + 1
            for c in s.crops:
                assert c.time == start + dt.timedelta(seconds=c.frame / 10)
                x, y, w, h = c.box
                assert abs(c.image.size[1] - min(h, 288 - y)) <= 2 and c.image.mode == 'RGB'
            # the walk's best crops are its large, whole views: not one cut by the frame border beats one inside
            inside = [c.quality for c in s.crops if 2 < c.box[0] and c.box[0] + c.box[2] < 382]
            cut = [c.quality for c in s.crops if not (2 < c.box[0] and c.box[0] + c.box[2] < 382)]
            if inside and cut:
                assert max(cut) <= min(inside) or len(inside) < len(s.crops)


def test_mot_file_boxes(short_videos, tmp_path):
    _, videos, start, _, truth = short_videos
    write_mot(tmp_path / 'det.txt', gt_boxes(truth[2]))
    from_file = list(sightings_from_video(videos[2], 'c2', start, tmp_path / 'det.txt'))
    parsed = list(sightings_from_video(videos[2], 'c2', start, gt_boxes(truth[2])))
    assert [(s.track_id, s.frames) for s in from_file] == [(s.track_id, s.frames) for s in parsed]


def test_bad_mot_data_is_named(short_videos, tmp_path):
    _, videos, start, _, _ = short_videos
    (tmp_path / 'det.txt').write_text('1,1,10,10,20,40,1\n2,1,10,10,-20,40,1\n')
    with pytest.raises(VideoError, match='line 2'):
        next(sightings_from_video(videos[1], 'c1', start, tmp_path / 'det.txt'))
    with pytest.raises(VideoError, match='frame 3'):
        next(sightings_from_video(videos[1], 'c1', start, {3: np.zeros((2, 4))}))


def test_unreadable_video(tmp_path):
    (tmp_path / 'x.avi').write_bytes(b'\x00' * 5000)
    with pytest.raises(VideoError):
        next(sightings_from_video(tmp_path / 'x.avi', 'c', dt.datetime.now(dt.timezone.utc)))


def test_progress_and_cancel_midway_leave_no_half_sighting(short_videos):
    _, videos, start, _, truth = short_videos
    given = gt_boxes(truth[2])
    calls = []
    full = list(sightings_from_video(videos[2], 'c2', start, given, progress=lambda d, t: calls.append((d, t))))
    assert calls[-1] == (120, 120) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    done = []
    partial = list(sightings_from_video(videos[2], 'c2', start, given, progress=lambda d, t: done.append(d),
                                        progress_every=1, cancelled=lambda: bool(done) and done[-1] >= 60))
    assert max(done) == 60
    # only the walks over before the cancel came out, each whole, as in the full run
    complete = {(s.track_id, s.frames, s.first_time) for s in full}
    assert 0 < len(partial) < len(full)
    assert all((s.track_id, s.frames, s.first_time) in complete for s in partial)
    assert all(s.last_time < start + dt.timedelta(seconds=6) for s in partial)


def test_visible_share_chooses_among_twice_as_many_candidates(short_videos):
    """A lent visibility head sees each track's 2 * max_crops best crops by the frame's measures, in one call when
    the track ends; their quality times its share decides which max_crops stay."""
    _, videos, start, _, truth = short_videos
    given = gt_boxes(truth[1])
    candidates = list(sightings_from_video(videos[1], 'c1', start, given, max_crops=6))
    seen = []

    def favour_the_worst(images):  # the worst candidate shows the whole person, the others little of it
        seen.append(images)
        return np.array([0.05] * (len(images) - 1) + [1.0])

    timings = {}
    chosen = list(sightings_from_video(videos[1], 'c1', start, given, max_crops=3, visible_share=favour_the_worst,
                                       timings=timings))
    assert [s.track_id for s in chosen] == [s.track_id for s in candidates] and len(seen) == len(chosen)
    assert timings['choose'] > 0
    for before, after, images in zip(candidates, chosen, seen):
        # the head saw exactly the crops a run keeping 6 keeps, best first
        assert [im.tobytes() for im in images] == [c.image.tobytes() for c in before.crops]
        shares = [0.05] * (len(before.crops) - 1) + [1.0]
        expected = sorted(((c.quality * v, c.frame) for c, v in zip(before.crops, shares)),
                          key=lambda e: (-e[0], e[1]))[:3]
        assert [(round(c.quality, 9), c.frame) for c in after.crops] == [(round(q, 9), f) for q, f in expected]
        assert [c.visible for c in after.crops] == [shares[[c.frame for c in before.crops].index(c.frame)]
                                                    for c in after.crops]
    assert any(s.crops[0].visible == 1.0 and len(s.crops) > 1 for s in chosen)  # the favoured crop leads
    with pytest.raises(ValueError, match='one share in 0..1'):  # a head's logits, not probabilities
        next(sightings_from_video(videos[1], 'c1', start, given, max_crops=3,
                                  visible_share=lambda images: np.full(len(images), 2.0)))
    with pytest.raises(ValueError, match='candidates'):
        next(sightings_from_video(videos[1], 'c1', start, given, max_crops=3, visible_share=favour_the_worst,
                                  candidates=2))
