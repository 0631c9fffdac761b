import numpy as np

from video.evaluate import _iou
from video.synthetic import generate_videos, load_walks

from .conftest import SHORT


def test_ground_truth_has_what_tracking_is_hard_for(short_videos):
    root, videos, start, walks, truth = short_videos
    assert set(videos) == {1, 2} and all(p.stat().st_size > 10_000 for p in videos.values())
    people_cameras = {}
    for walk in walks:
        people_cameras.setdefault(walk.person_id, set()).add(walk.camera)
    assert any(len(c) > 1 for c in people_cameras.values()), 'nobody walks past two cameras'
    assert len({w.walk_id for w in walks}) == len(walks)
    rows = np.concatenate([r for t in truth.values() for r in t.values()])
    assert set(rows[:, 0].astype(int)) <= {w.walk_id for w in walks}
    assert (rows[:, 6] < 0.7).any() and (rows[:, 6] > 0.99).any(), 'nobody occluded, or everybody'
    crossing = any(_iou(r[:, 1:5], r[:, 1:5])[np.triu_indices(len(r), 1)].max() > 0.2
                   for t in truth.values() for r in t.values() if len(r) > 1)
    assert crossing, 'no two people cross'
    # people enter and leave at the frame's sides: each walk's first and last boxes touch the border
    width = SHORT.size[0]
    for cam, t in truth.items():
        for walk in (w for w in walks if w.camera == cam and 0 < w.first_frame and w.first_frame + w.frames < 120):
            frames = [f for f, r in t.items() if walk.walk_id in r[:, 0]]
            for f in (min(frames), max(frames)):
                x, _, w, _ = t[f][t[f][:, 0] == walk.walk_id][0, 1:5]
                assert x <= 1 or x + w >= width - 1


def test_deterministic(short_videos, tmp_path):
    generate_videos(tmp_path, SHORT)
    _, walks, truth = load_walks(tmp_path)
    _, walks0, truth0 = load_walks(short_videos[0])
    assert walks == walks0
    for cam in truth:
        assert truth[cam].keys() == truth0[cam].keys()
        for f in truth[cam]:
            np.testing.assert_array_equal(truth[cam][f], truth0[cam][f])
