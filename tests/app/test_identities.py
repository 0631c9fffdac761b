"""Identities the service finds: a new video sighting is linked to the identity it matches, never to one that one
camera saw at the same time; operators name, merge and split them, and the timeline lists sightings in time order."""
from datetime import timedelta

import pytest

from app.sightings import store_sighting
from tests.app.conftest import API_KEY, make_client, wait_for
from tests.app.test_sightings import START, track
from tests.conftest import database_url_for, engine_settings

WRITE = {'X-API-Key': API_KEY}


def identity_of(client, sighting_id):
    return client.get(f'/v1/sightings/{sighting_id}').json()['identity_id']


@pytest.mark.parametrize('kind', ['sqlite-faiss', 'postgresql-milvus'])
def test_linking_keeps_one_person_in_one_place_and_operators_fix_the_rest(request, kind, tmp_path,
                                                                           tmp_path_factory, service_model, dataset):
    database, engine = kind.split('-')
    url = database_url_for(request, database, tmp_path_factory)
    with make_client(tmp_path, service_model, database_url=url, sync_seconds=0.2,
                     **engine_settings(engine, tmp_path_factory)) as client:
        service = client.app.state.service
        person = [r for r in dataset.gallery if r.pid > 0][:3]  # the same crops: the same person beyond doubt
        first = store_sighting(service, track(person, camera='1', start=START))
        # one camera, the same moment: a second person, however alike
        twin = store_sighting(service, track(person, camera='1', start=START + timedelta(seconds=1)))
        # another camera a minute later: the first person again
        later = store_sighting(service, track(person, camera='2', start=START + timedelta(minutes=1)))
        wait_for(lambda: all(identity_of(client, s) for s in (first, twin, later)), what='every sighting linked')
        a, b, c = (identity_of(client, s) for s in (first, twin, later))
        assert a != b and c in (a, b)

        # re-clustered all at once: the same verdict, whatever the order they came in
        window = {'after': (START - timedelta(hours=1)).isoformat(), 'before': (START + timedelta(hours=1)).isoformat()}
        r = client.post('/v1/admin/identities/recluster', json=window, headers=WRITE)
        assert r.status_code == 200, r.text
        assert r.json()['sightings'] == 3 and r.json()['identities'] == 2
        a, b, c = (identity_of(client, s) for s in (first, twin, later))
        assert a != b and c in (a, b)
        assert client.get('/v1/identities').json()['count'] == 2  # none left empty
        assert client.post('/v1/admin/identities/recluster', json={**window, 'before': window['after'][:10]},
                           headers=WRITE).status_code == 400  # before earlier than after
        mine = c
        own, stranger = (first, twin) if mine == a else (twin, first)  # its camera-1 sighting; the other one
        timeline = client.get(f'/v1/identities/{mine}').json()
        assert [s['camera_id'] for s in timeline['timeline']] == [1, 2]  # in time order
        assert timeline['sighting_count'] == 2 and timeline['camera_ids'] == [1, 2]

        # enrolment: a name
        r = client.patch(f'/v1/identities/{mine}', json={'name': 'visitor 7'}, headers=WRITE)
        assert r.status_code == 200 and r.json()['name'] == 'visitor 7'
        named = client.get('/v1/identities', params={'named': 'true'}).json()
        assert [i['id'] for i in named['data']] == [mine]

        # the other camera-1 identity cannot be merged in: one camera saw both at once
        other = b if mine == a else a
        r = client.post(f'/v1/identities/{mine}/merge', json={'other_id': other}, headers=WRITE)
        assert r.status_code == 409 and 'same time' in r.json()['detail']
        assert client.get(f'/v1/identities/{mine}').json()['sighting_count'] == 2  # nothing moved

        # split then merge back: the same sightings, the split-off identity gone
        r = client.post(f'/v1/identities/{mine}/split', json={'sighting_ids': [later]}, headers=WRITE)
        assert r.status_code == 201
        split_off = r.json()['id']
        assert identity_of(client, later) == split_off and client.get(f'/v1/identities/{mine}').json()[
            'sighting_count'] == 1
        r = client.post(f'/v1/identities/{mine}/merge', json={'other_id': split_off}, headers=WRITE)
        assert r.status_code == 200 and r.json()['sighting_count'] == 2 and r.json()['name'] == 'visitor 7'
        assert client.get(f'/v1/identities/{split_off}').status_code == 404
        assert identity_of(client, later) == mine

        # bad requests change nothing
        assert client.post(f'/v1/identities/{mine}/merge', json={'other_id': mine}, headers=WRITE).status_code == 409
        assert client.post(f'/v1/identities/{mine}/split', json={'sighting_ids': [stranger]},
                           headers=WRITE).status_code == 409  # not one of its sightings
        assert client.post(f'/v1/identities/{mine}/split', json={'sighting_ids': [own, later]},
                           headers=WRITE).status_code == 409  # all of them
        assert client.post('/v1/identities/999999/merge', json={'other_id': mine}, headers=WRITE).status_code == 404
        assert client.patch(f'/v1/identities/{mine}', json={'name': 'a\nb'}, headers=WRITE).status_code == 400
        assert client.get(f'/v1/identities/{mine}').json()['sighting_count'] == 2


def test_two_cameras_closer_in_time_than_anyone_travels_are_two_people(tmp_path, service_model, dataset):
    with make_client(tmp_path, service_model, sync_seconds=0.2, min_travel_seconds=120) as client:
        service = client.app.state.service
        person = [r for r in dataset.gallery if r.pid > 0][:3]  # the same crops: the same person beyond doubt
        first = store_sighting(service, track(person, camera='1', start=START))
        # camera 2 a minute after camera 1's sighting ended: nobody gets there that fast
        soon = store_sighting(service, track(person, camera='2', start=START + timedelta(minutes=1)))
        # camera 2 ten minutes later: time enough
        later = store_sighting(service, track(person, camera='2', start=START + timedelta(minutes=10)))
        wait_for(lambda: all(identity_of(client, s) for s in (first, soon, later)), what='every sighting linked')
        a, b, c = (identity_of(client, s) for s in (first, soon, later))
        assert a != b and c in (a, b)

        window = {'after': (START - timedelta(hours=1)).isoformat(), 'before': (START + timedelta(hours=1)).isoformat()}
        r = client.post('/v1/admin/identities/recluster', json=window, headers=WRITE)
        assert r.status_code == 200 and r.json()['identities'] == 2, r.text
        a, b, c = (identity_of(client, s) for s in (first, soon, later))
        assert a != b and c in (a, b)

        for into, other in ((a, b), (b, a)):  # the earlier sighting in the identity, then the later one
            r = client.post(f'/v1/identities/{into}/merge', json={'other_id': other}, headers=WRITE)
            assert r.status_code == 409 and 'AMG_MIN_TRAVEL_SECONDS (120 s)' in r.json()['detail'], r.text
        assert {identity_of(client, s) for s in (first, soon)} == {a, b}  # nothing moved
