"""Sightings as the gallery's unit: a video track stored as one sighting (app.sightings.store_sighting, with
hand-made sightings of the synthetic dataset's crops), uploads as sightings of one and of unknown persons, the
sighting routes, "where else was this person" and group_by=sighting, against their definitions; on SQLite and
PostgreSQL, FAISS and Milvus Lite."""
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import List, Tuple

import numpy as np
import pytest
from PIL import Image

from app.sightings import GROUP_OVERFETCH, SightingRejected, store_sighting
from storage import crud
from tests.app.conftest import files_for, make_client
from tests.conftest import database_url_for, engine_settings

START = datetime(2026, 6, 1, 8, 0, 0)


@dataclass
class Crop:  # the shape of video.sightings.Crop
    image: Image.Image
    frame: int
    time: datetime
    box: Tuple[float, float, float, float]
    quality: float


@dataclass
class Sighting:  # the shape of video.sightings.Sighting
    camera_id: str
    track_id: int
    video: str
    first_time: datetime
    last_time: datetime
    frames: int
    crops: List[Crop] = field(default_factory=list)


def track(records, camera: str = '5', start: datetime = START, qualities=None, video: str = 'cams/lobby.mp4'):
    """A sighting of ``records``' crops, one every 10 frames at 10 fps from ``start``."""
    qualities = qualities or [0.5] * len(records)
    crops = [Crop(Image.open(r.path).convert('RGB'), 10 * n, start + timedelta(seconds=n), (10.0 * n, 20.0, 64.0,
                                                                                            128.0), q)
             for n, (r, q) in enumerate(zip(records, qualities))]
    return Sighting(camera, 7, video, start, start + timedelta(seconds=len(records)), 10 * len(records) + 1, crops)


@pytest.fixture(scope='module', params=['sqlite-faiss', 'postgresql-faiss', 'sqlite-milvus', 'postgresql-milvus',
                                        pytest.param('sqlite-milvusserver', marks=pytest.mark.slow)])
def client(request, tmp_path_factory, service_model, dataset):
    """A service with half the synthetic gallery uploaded with its persons; the persons of the rest are unknown
    until a test stores them as sightings. Its vectors in FAISS, Milvus Lite and (slow) a real Milvus standalone."""
    database, engine = request.param.split('-')
    url = database_url_for(request, database, tmp_path_factory)
    with make_client(tmp_path_factory.mktemp('sightings'), service_model, database_url=url,
                     **engine_settings(engine, tmp_path_factory, request=request)) as client:
        labelled = [r for r in dataset.gallery if r.pid > 0][::2]
        r = client.post('/v1/gallery', files=files_for([g.path for g in labelled]), data={
            'person_id': ','.join(str(g.pid) for g in labelled), 'camera_id': ','.join(str(g.camid) for g in labelled),
            'timestamp': '2026-01-01T10:00:00'})
        assert r.status_code == 201, r.text
        yield client


def unlabelled(dataset, n: int, nth: int):
    """``n`` gallery records of one person from the half not uploaded (the ``nth`` such person: each test its
    own), and that person."""
    rest = [r for r in dataset.gallery if r.pid > 0][1::2]
    pid = [p for p in sorted({r.pid for r in rest}) if sum(r.pid == p for r in rest) >= n][nth]
    return [r for r in rest if r.pid == pid][:n], pid


def counts(client):
    service = client.app.state.service
    with service.Session() as s:
        return crud.count_images(session=s), crud.list_sightings(session=s, limit=1)[1]


def test_a_stored_track_is_one_sighting_with_its_crops(client, dataset):
    records, _ = unlabelled(dataset, 3, nth=0)
    start = datetime(2026, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))  # 08:00 UTC
    sighting_id = store_sighting(client.app.state.service, track(records, start=start, qualities=[0.2, 0.9, 0.5]))
    r = client.get(f'/v1/sightings/{sighting_id}')
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body['camera_id'], body['video'], body['track_id'], body['crop_count'], body['frame_count']) == \
        (5, 'cams/lobby.mp4', 7, 3, 31)
    assert body['first_time'] == '2026-06-01T08:00:00Z' and body['last_time'] == '2026-06-01T08:00:03Z'
    crops = body['crops']
    assert [c['frame'] for c in crops] == [10, 20, 0]  # best first: qualities 0.9, 0.5, 0.2
    assert body['best_image_id'] == crops[0]['id'] and body['quality'] == 0.9
    assert crops[0]['box'] == [10.0, 20.0, 64.0, 128.0] and crops[0]['timestamp'] == '2026-06-01T08:00:01Z'
    assert all(c['person_id'] is None and c['sighting_id'] == sighting_id and c['camera_id'] == 5 for c in crops)
    assert crops[0]['source_name'] == 'lobby.mp4 frame 10'
    item = client.get(f"/v1/gallery/{crops[0]['id']}").json()
    assert (item['sighting_id'], item['frame'], item['box']) == (sighting_id, 10, [10.0, 20.0, 64.0, 128.0])
    assert client.get(f"/v1/gallery/{crops[0]['id']}/image").status_code == 200
    listed = client.get('/v1/gallery', params={'sighting_id': sighting_id}).json()
    assert listed['count'] == 3 and {c['id'] for c in listed['data']} == {c['id'] for c in crops}

    listed = client.get('/v1/sightings', params={'camera_id': '5', 'limit': 500}).json()
    assert sighting_id in {s['id'] for s in listed['data']} and listed['count'] == len(listed['data'])
    for params, found in (({'after': '2026-06-01T08:00:02Z'}, True), ({'after': '2026-06-01T08:00:04Z'}, False),
                          ({'before': '2026-06-01T07:59:59Z'}, False), ({'camera_id': '4'}, False),
                          ({'video': 'cams/lobby.mp4', 'before': '2026-06-01T08:00:00Z'}, True)):
        ids = {s['id'] for s in client.get('/v1/sightings', params=dict(params, limit=500)).json()['data']}
        assert (sighting_id in ids) == found, params
    page = client.get('/v1/sightings', params={'limit': 1, 'offset': 1}).json()
    assert len(page['data']) == 1 and page['count'] >= 2
    assert client.get('/v1/sightings/987654').status_code == 404
    assert client.get('/v1/sightings', params={'after': 'yesterday'}).status_code == 400
    assert client.get('/v1/sightings', params={'video': 'a\x00b'}).status_code == 400


def test_an_upload_without_a_person_is_a_sighting_of_one_of_someone_unknown(client, dataset):
    g = dataset.gallery[0]
    r = client.post('/v1/gallery', files=files_for([g.path]), data={'camera_id': '3',
                                                                    'timestamp': '2026-02-02T02:02:02Z'})
    assert r.status_code == 201, r.text
    item = r.json()['data'][0]
    assert item['person_id'] is None and item['frame'] is None and item['box'] is None
    sighting = client.get(f"/v1/sightings/{item['sighting_id']}").json()
    assert (sighting['camera_id'], sighting['crop_count'], sighting['best_image_id'], sighting['first_time'],
            sighting['last_time'], sighting['video']) == (3, 1, item['id'], '2026-02-02T02:02:02Z',
                                                          '2026-02-02T02:02:02Z', '')
    labelled = client.post('/v1/gallery', files=files_for([g.path]), data={'person_id': '4'}).json()['data'][0]
    assert labelled['person_id'] == 4 and labelled['sighting_id'] not in (None, item['sighting_id'])
    r = client.post('/v1/search', files=files_for([g.path]), data={'k': '100', 'min_score': '-1'})
    found = {m['image_id']: m for m in r.json()['results'][0]['matches']}
    assert found[item['id']]['person_id'] is None and found[item['id']]['sighting_id'] == item['sighting_id']
    for image in (item, labelled):  # the sighting goes with its last image
        assert client.delete(f"/v1/gallery/{image['id']}").status_code == 200
        assert client.get(f"/v1/sightings/{image['sighting_id']}").status_code == 404


def test_a_malformed_sighting_or_a_failure_midway_stores_nothing(client, dataset, monkeypatch):
    service = client.app.state.service
    records, _ = unlabelled(dataset, 2, nth=1)
    before = counts(client)
    bad = []
    for change, message in ((lambda s: s.crops.clear(), 'at least one crop'),
                            (lambda s: setattr(s, 'camera_id', 'lobby'), 'camera_id'),
                            (lambda s: setattr(s, 'last_time', s.first_time - timedelta(seconds=1)), 'before'),
                            (lambda s: setattr(s.crops[1], 'box', (0.0, 0.0, 0.0, 10.0)), 'crops[1].box'),
                            (lambda s: setattr(s.crops[0], 'quality', 1.5), 'crops[0].quality'),
                            (lambda s: setattr(s.crops[0], 'quality', float('nan')), 'quality'),
                            (lambda s: setattr(s.crops[0], 'image', s.crops[0].image.convert('L')), 'RGB'),
                            (lambda s: setattr(s, 'video', 'a\x00b'), 'video')):
        sighting = track(records)
        change(sighting)
        with pytest.raises(SightingRejected, match=message.replace('[', r'\[').replace(']', r'\]')):
            store_sighting(service, sighting)
        bad.append(message)
    assert counts(client) == before

    def fail(**_):
        raise RuntimeError('the disk is full')
    monkeypatch.setattr(crud, 'count_sighting', fail)  # after the sighting and its images were added
    with pytest.raises(RuntimeError, match='disk is full'):
        store_sighting(service, track(records))
    assert counts(client) == before


def test_where_else_was_this_person_leaves_the_sighting_out(client, dataset):
    from reid.matching import pool_parts
    from tests.app.test_api import _brute_force_scores, _stored
    records, pid = unlabelled(dataset, 3, nth=2)
    sighting_id = store_sighting(client.app.state.service, track(records))
    own = [c['id'] for c in client.get(f'/v1/sightings/{sighting_id}').json()['crops']]
    r = client.post(f'/v1/sightings/{sighting_id}/search', params={'k': '6', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    (result,) = r.json()['results']
    matches = result['matches']
    assert result['filename'] == f'sighting {sighting_id} (3 crops)'
    assert len(matches) == 6 and not set(own) & {m['image_id'] for m in matches}
    ids, vectors = _stored(client)
    mine = np.isin(ids, own)
    query = pool_parts(vectors[mine], client.app.state.service.current.embedder.num_parts)
    assert np.allclose([m['cosine'] for m in matches], _brute_force_scores(query, vectors[~mine], 6), atol=3e-3)
    assert matches[0]['person_id'] == pid  # the person's labelled images, uploaded from the other half
    r = client.post(f'/v1/sightings/{sighting_id}/search', params={'camera_id': '1', 'k': '3'})
    assert r.status_code == 200 and {m['camera_id'] for m in r.json()['results'][0]['matches']} <= {1}
    assert client.post('/v1/sightings/987654/search').status_code == 404


def test_group_by_sighting_is_each_sightings_best_crop(client, dataset):
    records, _ = unlabelled(dataset, 4, nth=3)
    sighting_id = store_sighting(client.app.state.service, track(records, camera='6'))
    query = files_for([records[0].path])
    k = 4
    plain = client.post('/v1/search', files=query, data={'k': str(k * GROUP_OVERFETCH), 'min_score': '-1'})
    r = client.post('/v1/search', files=query, data={'k': str(k), 'min_score': '-1', 'group_by': 'sighting'})
    assert r.status_code == 200 and plain.status_code == 200, r.text
    grouped = r.json()['results'][0]['matches']
    firsts, seen = [], set()
    for m in plain.json()['results'][0]['matches']:  # the definition: each sighting's first (best) crop
        if m['sighting_id'] not in seen:
            seen.add(m['sighting_id'])
            firsts.append(m['image_id'])
    assert [m['image_id'] for m in grouped] == firsts[:k]
    assert len({m['sighting_id'] for m in grouped}) == len(grouped) == k
    mine = next(m for m in grouped if m['sighting_id'] == sighting_id)  # its crops rank high: 1 entry, not 4
    assert mine['sighting']['camera_id'] == 6 and mine['sighting']['crop_count'] == 4
    assert mine['sighting']['first_time'] == '2026-06-01T08:00:00Z' and mine['sighting']['last_time'] == \
        '2026-06-01T08:00:04Z'
    assert sum(m['sighting_id'] == sighting_id for m in plain.json()['results'][0]['matches'][:8]) >= 2
    r = client.post('/v1/search', files=query, data={'group_by': 'person'})
    assert r.status_code == 422
