"""Hostile input gets a clear 4xx, never a 500, on SQLite and PostgreSQL."""
import pytest

from tests.app.conftest import API_KEY, files_for, make_client
from tests.conftest import database_url_for

ADMIN = {'X-API-Key': API_KEY}


@pytest.fixture(scope='module', params=['sqlite', 'postgresql'])
def client(request, tmp_path_factory, service_model, dataset):
    data_dir = tmp_path_factory.mktemp('abuse')
    url = database_url_for(request, request.param, tmp_path_factory)
    with make_client(data_dir, service_model, database_url=url) as c:
        r = c.post('/v1/gallery', files=files_for([dataset.gallery[0].path]), data={'person_id': '1'})
        assert r.status_code == 201
        yield c, data_dir, dataset


@pytest.mark.parametrize('field', ['after', 'before'])
def test_date_times_out_of_range_are_400(client, field):
    c, _, dataset = client
    for value in ('9999-12-31T23:59:59-01:00', '0001-01-01T00:00:00+01:00'):
        r = c.post('/v1/search', files=files_for([dataset.query[0].path]), data={field: value})
        assert r.status_code == 400 and field in r.json()['detail'], r.text
        assert c.get('/v1/gallery', params={field: value}).status_code == 400


def test_upload_fields_are_bounded(client):
    c, _, dataset = client
    path = dataset.gallery[1].path
    cases = [({'person_id': '1', 'timestamp': '9999-12-31T23:59:59-01:00'}, 'timestamp'),
             ({'person_id': str(2 ** 31)}, 'person_id'), ({'person_id': '1', 'camera_id': str(2 ** 40)}, 'camera_id'),
             ({'person_id': '1', 'tags': ','.join(f't{i}' for i in range(33))}, 'tags'),
             ({'person_id': '1', 'tags': 'x' * 65}, 'tags')]
    before = c.get('/v1/gallery', params={'limit': 1}).json()['count']
    for data, field in cases:
        r = c.post('/v1/gallery', files=files_for([path]), data=data)
        assert r.status_code == 400 and field in r.json()['detail'], (data, r.text)
    long_name = [('images', ('n' * 600 + '.jpg', open(path, 'rb').read(), 'image/jpeg'))]
    r = c.post('/v1/gallery', files=long_name, data={'person_id': '1'})
    assert r.status_code == 400 and 'file name' in r.json()['detail']
    assert c.get('/v1/gallery', params={'limit': 1}).json()['count'] == before  # nothing was stored
    assert c.get(f'/v1/persons/{2 ** 40}').status_code == 422


@pytest.mark.parametrize('value', ['Infinity', '-Infinity', 'NaN'])
def test_non_finite_job_parameters_are_refused(client, value, learnable_root):
    c, _, _ = client
    body = '{"kind": "train", "params": {"data_dir": "%s", "lr": %s}}' % (learnable_root, value)
    r = c.post('/v1/admin/jobs', headers=dict(ADMIN, **{'Content-Type': 'application/json'}), content=body)
    assert r.status_code == 422, r.text
    assert c.get('/v1/admin/jobs', headers=ADMIN).json()['count'] == 0


def test_a_missing_stored_file_is_410_not_500(client):
    c, data_dir, dataset = client
    r = c.post('/v1/gallery', files=files_for([dataset.gallery[2].path]), data={'person_id': '7'})
    item = r.json()['data'][0]
    for f in (data_dir / 'images').rglob(f"{item['image_sha256']}*"):
        f.unlink()
    assert c.get(item['image_url']).status_code == 410
    assert c.get(item['thumbnail_url']).status_code == 410
