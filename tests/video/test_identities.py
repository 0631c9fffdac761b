import datetime as dt

import numpy as np

from video.evaluate import identity_scores, visible_boxes
from video.identities import cannot_link, link_sightings

T0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc)


def at(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def test_same_camera_overlap_is_never_one_person():
    # identical vectors: only the constraint keeps the first two apart
    vectors = np.ones((3, 4))
    cameras = ['c1', 'c1', 'c2']
    first, last = [at(0), at(5), at(30)], [at(10), at(15), at(40)]
    labels = link_sightings(vectors, cameras, first, last, threshold=0.5)
    assert labels[0] != labels[1]
    assert labels[2] in (labels[0], labels[1])  # the other camera's sighting joins one of them


def test_same_camera_one_after_the_other_may_link():
    labels = link_sightings(np.ones((2, 4)), ['c1', 'c1'], [at(0), at(20)], [at(10), at(30)], threshold=0.5)
    assert labels[0] == labels[1]


def test_min_travel_time_between_cameras():
    first, last = [at(0), at(12)], [at(10), at(20)]
    forbidden = cannot_link(['c1', 'c2'], first, last, min_travel_seconds=5)
    assert forbidden[0, 1] and forbidden[1, 0] and not forbidden[0, 0]
    assert not cannot_link(['c1', 'c2'], first, last, min_travel_seconds=1).any()
    labels = link_sightings(np.ones((2, 4)), ['c1', 'c2'], first, last, threshold=0.5, min_travel_seconds=5)
    assert labels[0] != labels[1]


def test_vectors_decide_the_rest():
    rng = np.random.default_rng(0)
    people = rng.normal(size=(3, 16))
    vectors = np.repeat(people, 2, axis=0) + 0.05 * rng.normal(size=(6, 16))  # two sightings each, on c1 and c2
    cameras = ['c1', 'c2'] * 3
    times = [at(100 * i) for i in range(6)]
    labels = link_sightings(vectors, cameras, times, [t + dt.timedelta(seconds=10) for t in times], threshold=0.3)
    assert len(set(labels)) == 3 and all(labels[2 * i] == labels[2 * i + 1] for i in range(3))


def test_identity_idf1_counts_wrong_links(short_videos):
    _, _, _, walks, truth = short_videos
    person_of_walk = {w.walk_id: w.person_id for w in walks}
    tracks = {cam: visible_boxes(t) for cam, t in truth.items()}  # perfect tracks, track id = walk id
    walk_ids = [(cam, int(w)) for cam, t in tracks.items() for w in {r[0] for rows in t.values() for r in rows}]
    right = {(cam, w): person_of_walk[w] for cam, w in walk_ids}
    assert identity_scores(truth, tracks, person_of_walk, right)['idf1'] == 1.0
    apart = {(cam, w): w for cam, w in walk_ids}  # every walk its own identity: cross-camera links all missed
    assert identity_scores(truth, tracks, person_of_walk, apart)['idf1'] < 0.9


def test_camera_centring_links_people_not_cameras():
    # each camera adds its own large offset (its light, its background): by plain cosine a camera's sightings are
    # nearer each other than one person's on two cameras; with each camera's mean taken out the people show
    rng = np.random.default_rng(1)
    people = rng.normal(size=(3, 16))
    offsets = 4 * rng.normal(size=(2, 16))
    vectors = np.array([people[p] + offsets[c] for c in range(2) for p in range(3)])
    cameras = ['c1'] * 3 + ['c2'] * 3
    times = [at(100 * i) for i in range(6)]
    ends = [t + dt.timedelta(seconds=10) for t in times]
    plain = link_sightings(vectors, cameras, times, ends, threshold=0.3)
    assert len(set(plain[:3])) == 1 and len(set(plain[3:])) == 1 and plain[0] != plain[3]  # by camera
    centred = link_sightings(vectors, cameras, times, ends, threshold=0.3, camera_centring=True)
    assert len(set(centred)) == 3 and all(centred[p] == centred[3 + p] for p in range(3))  # by person


def test_centre_by_camera():
    from reid.matching import centre_by_camera
    x = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 7.0]])
    out = centre_by_camera(x, [0, 0, 1, 1])
    expected = np.array([[1, -1], [-1, 1], [0, -1], [0, 1]]) / np.array([[2 ** .5], [2 ** .5], [1], [1]])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(centre_by_camera(x, [3, 3, 3, 3]), x.astype(np.float32))  # one camera: as given
