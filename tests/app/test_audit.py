"""The audit trail: each search, listing, image and thumbnail fetch, write, delete, erasure and admin action is one
event (who, from where, which route, filters, k, how many results; no image), readable by admins filtered, as CSV
and JSON lines, append-only in the database, with its own retention. On SQLite and PostgreSQL."""
import csv
import io
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from storage import audit as store
from storage.db import AuditEvent, utcnow
from tests.app.conftest import API_KEY, files_for, make_client
from tests.app.test_erasure import people
from tests.conftest import database_url_for

ADMIN, WRITER, READER = {'X-API-Key': API_KEY}, {'X-API-Key': 'writer'}, {'X-API-Key': 'reader'}


@pytest.mark.parametrize('database', ['sqlite', 'postgresql'])
def test_every_access_is_one_event_that_admins_read_and_export(request, database, tmp_path, tmp_path_factory,
                                                               service_model, dataset):
    url = database_url_for(request, database, tmp_path_factory)
    with make_client(tmp_path, service_model, database_url=url, read_api_key='reader', write_api_key='writer',
                     audit_retention_days=30) as client:
        service = client.app.state.service
        mine, theirs = people(dataset, 2, 2)
        r = client.post('/v1/gallery', files=files_for([g.path for g in mine + theirs]), headers=WRITER,
                        data={'person_id': f'{mine[0].pid},{mine[0].pid},{theirs[0].pid},{theirs[0].pid}',
                              'camera_id': '1'})
        assert r.status_code == 201
        items = r.json()['data']
        r = client.post('/v1/search', files=files_for([mine[0].path]), headers=READER,
                        data={'k': '3', 'camera_id': '1', 'min_score': '-1'})
        assert r.status_code == 200 and len(r.json()['results'][0]['matches']) == 3
        assert client.get('/v1/gallery', params={'person_id': theirs[0].pid}, headers=READER).json()['count'] == 2
        assert client.get(items[0]['image_url'], headers=READER).status_code == 200
        assert client.get(items[0]['thumbnail_url'], headers=READER).status_code == 200
        assert client.delete(f"/v1/gallery/{items[3]['id']}", headers=WRITER).status_code == 200
        assert client.delete(f'/v1/persons/{mine[0].pid}', headers=WRITER).status_code == 200
        assert client.get('/v1/admin/jobs', headers=ADMIN).status_code == 200
        assert client.get('/v1/gallery', headers={'X-API-Key': 'guess'}).status_code == 401
        assert client.get('/healthz').status_code == 200  # not about people: not recorded

        r = client.get('/v1/admin/audit', headers=ADMIN)
        assert r.status_code == 200, r.text
        events = r.json()['data'][::-1]  # newest first
        got = [(e['method'], e['route'], e['status'], e['key_name'], e['role']) for e in events]
        assert got == [
            ('POST', '/v1/gallery', 201, 'AMG_WRITE_API_KEY', 'write'),
            ('POST', '/v1/search', 200, 'AMG_READ_API_KEY', 'read'),
            ('GET', '/v1/gallery', 200, 'AMG_READ_API_KEY', 'read'),
            ('GET', '/v1/gallery/{image_id}/image', 200, 'AMG_READ_API_KEY', 'read'),
            ('GET', '/v1/gallery/{image_id}/thumbnail', 200, 'AMG_READ_API_KEY', 'read'),
            ('DELETE', '/v1/gallery/{image_id}', 200, 'AMG_WRITE_API_KEY', 'write'),
            ('DELETE', '/v1/persons/{person_id}', 200, 'AMG_WRITE_API_KEY', 'write'),
            ('GET', '/v1/admin/jobs', 200, 'AMG_API_KEY', 'admin'),
            ('GET', '/v1/gallery', 401, '', 'open'),
        ]
        search = events[1]
        assert search['filters'] == {'camera_id': '1', 'min_score': '-1.0', 'queries': '1'}
        assert (search['k'], search['results'], search['client']) == (3, 3, 'testclient')
        assert events[2]['filters'] == {'person_id': str(theirs[0].pid)} and events[2]['results'] == 2
        assert events[3]['path'] == items[0]['image_url']
        assert events[6]['results'] == 2  # the erasure: two images
        assert all(len(json.dumps(e)) < 1000 for e in events)  # no image bytes anywhere

        # filtered, and the reading itself recorded
        r = client.get('/v1/admin/audit', params={'route': '/v1/search', 'key_name': 'AMG_READ_API_KEY'},
                       headers=ADMIN).json()
        assert r['count'] == 1 and r['data'][0]['id'] == search['id']
        page = client.get('/v1/admin/audit', params={'limit': 2, 'role': 'write'}, headers=ADMIN).json()
        assert page['count'] == 3 and len(page['data']) == 2
        after = client.get('/v1/admin/audit', params={'after': (utcnow() + timedelta(hours=1)).isoformat()},
                           headers=ADMIN).json()
        assert after['count'] == 0
        assert client.get('/v1/admin/audit', params={'route': '/v1/admin/audit'},
                          headers=ADMIN).json()['count'] >= 3

        # exports: every matching event, oldest first
        r = client.get('/v1/admin/audit', params={'format': 'csv', 'role': 'read'}, headers=ADMIN)
        assert r.status_code == 200 and r.headers['content-type'].startswith('text/csv')
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [row['route'] for row in rows] == ['/v1/search', '/v1/gallery', '/v1/gallery/{image_id}/image',
                                                  '/v1/gallery/{image_id}/thumbnail']
        assert json.loads(rows[0]['filters'])['camera_id'] == '1' and rows[0]['k'] == '3'
        r = client.get('/v1/admin/audit', params={'format': 'jsonl', 'method': 'DELETE'}, headers=ADMIN)
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert [e['route'] for e in lines] == ['/v1/gallery/{image_id}', '/v1/persons/{person_id}']

        # bad requests, and no one else reads it
        assert client.get('/v1/admin/audit', params={'format': 'xml'}, headers=ADMIN).status_code == 422
        assert client.get('/v1/admin/audit', params={'after': 'yesterday'}, headers=ADMIN).status_code == 400
        assert client.get('/v1/admin/audit', headers=WRITER).status_code == 403

        # append-only in the database itself
        with pytest.raises(DBAPIError, match='append-only'):
            with service.Session.begin() as s:
                s.execute(update(AuditEvent).where(AuditEvent.id == search['id']).values(key_name='someone else'))
        with service.Session() as s:
            assert s.get(AuditEvent, search['id']).key_name == 'AMG_READ_API_KEY'

        # its own retention
        with service.Session.begin() as s:
            store.append_events(session=s, events=[dict(at=utcnow() - timedelta(days=31), method='GET',
                                                        route='/v1/gallery', path='/v1/gallery', status=200)] * 3)
        assert service.retention.sweep()['audit_events'] == 3
        with service.Session() as s:
            assert s.scalar(select(func.count(AuditEvent.id))) > 0  # the recent ones stay
            assert s.scalar(select(func.min(AuditEvent.at))) > utcnow() - timedelta(days=1)
