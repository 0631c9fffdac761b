"""Named keys: made and revoked through the admin API, the secret shown once and stored hashed; a read key cannot
write nor administer, a write key cannot administer; a revoked or expired key is refused at once by every replica
(they share the database); the environment's keys keep working; the audit trail names the key. On SQLite and
PostgreSQL."""
import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import update

from storage.db import ApiKey, utcnow
from tests.app.conftest import API_KEY, make_client, wait_for
from tests.conftest import database_url_for

ADMIN = {'X-API-Key': API_KEY}


def key(secret):
    return {'X-API-Key': secret}


@pytest.mark.parametrize('database', ['sqlite', 'postgresql'])
def test_named_keys_have_roles_and_a_revoked_key_is_refused_by_every_replica(request, database, tmp_path,
                                                                              tmp_path_factory):
    url = database_url_for(request, database, tmp_path_factory)
    settings = dict(database_url=url, read_api_key='reader', write_api_key='writer')
    with make_client(tmp_path / 'a', **settings) as a, make_client(tmp_path / 'b', **settings) as b:
        made = {}
        for name, role in (('front desk', 'read'), ('uploader', 'write'), ('ops', 'admin')):
            r = a.post('/v1/admin/keys', json={'name': name, 'role': role}, headers=ADMIN)
            assert r.status_code == 201, r.text
            assert r.json()['key'].startswith('amg_') and r.json()['revoked_at'] is None
            made[role] = r.json()
        listed = a.get('/v1/admin/keys', headers=ADMIN).json()
        assert [k['name'] for k in listed['data']] == ['front desk', 'uploader', 'ops']
        assert all('key' not in k for k in listed['data'])  # shown once
        with a.app.state.service.Session() as s:  # stored hashed, never the secret
            row = s.get(ApiKey, made['read']['id'])
            assert row.secret_sha256 == hashlib.sha256(made['read']['key'].encode()).hexdigest()
            assert made['read']['key'] not in repr([getattr(row, c.name) for c in ApiKey.__table__.columns])

        reader, writer, admin = (key(made[r]['key']) for r in ('read', 'write', 'admin'))
        for client in (a, b):  # every replica knows them
            assert client.get('/v1/gallery', headers=reader).status_code == 200
            r = client.delete('/v1/gallery/987654', headers=reader)
            assert r.status_code == 403 and "'front desk' (read)" in r.json()['detail']
            assert client.delete('/v1/persons/987654', headers=reader).status_code == 403
            assert client.get('/v1/admin/jobs', headers=reader).status_code == 403
            assert client.delete('/v1/gallery/987654', headers=writer).status_code == 404  # allowed: nothing there
            assert client.get('/v1/admin/jobs', headers=writer).status_code == 403
            assert client.get('/v1/admin/jobs', headers=admin).status_code == 200
            assert client.get('/v1/gallery', headers=key('amg_guessed')).status_code == 401
        # the environment's keys are the bootstrap keys, beside the named ones
        assert a.get('/v1/gallery', headers=key('reader')).status_code == 200
        assert a.delete('/v1/gallery/987654', headers=key('writer')).status_code == 404
        # a named admin key makes keys too
        assert a.post('/v1/admin/keys', json={'name': 'night shift', 'role': 'read'}, headers=admin).status_code == 201

        # revoked on one replica: refused by the other at once
        r = a.delete(f"/v1/admin/keys/{made['read']['id']}", headers=ADMIN)
        assert r.status_code == 200 and r.json()['revoked_at'] is not None
        r = b.get('/v1/gallery', headers=reader)
        assert r.status_code == 401 and 'revoked' in r.json()['detail']
        assert a.get('/v1/gallery', headers=reader).status_code == 401
        assert b.get('/v1/gallery', headers=writer).status_code == 200  # the others stay

        # expired: refused, saying so
        with a.app.state.service.Session.begin() as s:
            s.execute(update(ApiKey).where(ApiKey.id == made['write']['id'])
                      .values(expires_at=utcnow() - timedelta(seconds=1)))
        r = b.delete('/v1/gallery/987654', headers=writer)
        assert r.status_code == 401 and 'expired' in r.json()['detail']

        # the audit trail names the key, its refused attempts too
        def roles(name):  # replica b's refusals reach the shared trail from b's writer thread
            return {(e['role'], e['status']) for e in a.get('/v1/admin/audit', params={'key_name': name},
                                                            headers=ADMIN).json()['data']}
        wait_for(lambda: ('expired', 401) in roles('uploader'), what="b's refusal of the expired key audited")
        assert {role for role, _ in roles('uploader')} == {'write', 'expired'}
        assert {status for role, status in roles('front desk') if role == 'revoked'} == {401}

        # bad requests
        for body, status in (({'name': 'ops', 'role': 'read'}, 409), ({'name': 'x', 'role': 'root'}, 422),
                             ({'name': 'a\nb', 'role': 'read'}, 422), ({'name': '', 'role': 'read'}, 422),
                             ({'name': 'AMG_API_KEY', 'role': 'read'}, 422), ({'name': 'amg_x', 'role': 'read'}, 422),
                             ({'name': 'x', 'role': 'read', 'expires_at': '2020-01-01T00:00:00Z'}, 400),
                             ({'name': 'x', 'role': 'read', 'secret': 'mine'}, 422)):
            assert a.post('/v1/admin/keys', json=body, headers=ADMIN).status_code == status, body
        assert a.delete('/v1/admin/keys/987654', headers=ADMIN).status_code == 404
        assert a.post('/v1/admin/keys', json={'name': 'y', 'role': 'read'}, headers=reader).status_code == 401


def test_an_unknown_key_is_refused_where_no_key_is_needed_and_sites_need_a_read_key(tmp_path):
    """Reads open (no AMG_READ_API_KEY): no key reads, a key the server does not know is 401 (not read as none);
    AMG_SITES without a read key is refused at start, as open reads would see every site."""
    from pydantic import ValidationError

    from app.settings import Settings
    with make_client(tmp_path / 'open') as client:
        assert client.get('/v1/gallery').status_code == 200
        r = client.get('/v1/gallery', headers=key('garbage'))
        assert r.status_code == 401 and 'unknown' in r.json()['detail']
    with pytest.raises(ValidationError, match='AMG_READ_API_KEY'):
        Settings(data_dir=tmp_path, sites='shop-a', _env_file=None)
    assert Settings(data_dir=tmp_path, sites='shop-a', read_api_key='r', _env_file=None).site_list == ['shop-a']
