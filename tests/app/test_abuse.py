"""Hostile input gets a clear 4xx, never a 500, on SQLite and PostgreSQL, on FAISS and Milvus; work per request is
bounded; writes sit behind their key; files stay durable."""
import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from app.imaging import decode_upload
from app.settings import Settings
from app.state import ServiceState
from models.imaging import open_image
from storage import crud
from tests.app.conftest import API_KEY, files_for, make_client, png_bytes
from tests.conftest import database_url_for, engine_settings

ADMIN = {'X-API-Key': API_KEY}


@pytest.fixture(scope='module', params=['sqlite-faiss', 'postgresql-faiss', 'sqlite-milvus'])
def client(request, tmp_path_factory, service_model, dataset):
    database, engine = request.param.split('-')
    data_dir = tmp_path_factory.mktemp('abuse')
    url = database_url_for(request, database, tmp_path_factory)
    with make_client(data_dir, service_model, database_url=url, **engine_settings(engine, tmp_path_factory)) as c:
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


@pytest.mark.parametrize('tag', ['\x00', 'tab\there', 'line\nbreak', 'del\x7f'])
def test_control_characters_in_tags_are_400_everywhere(client, tag):
    # PostgreSQL text cannot hold NUL (the fuzzer found a 500 on a tag listing) and Milvus cannot quote controls
    c, _, dataset = client
    before = c.get('/v1/gallery', params={'limit': 1}).json()['count']
    r = c.post('/v1/gallery', files=files_for([dataset.gallery[1].path]), data={'person_id': '1', 'tags': tag})
    assert r.status_code == 400 and 'control characters' in r.json()['detail'], r.text
    r = c.post('/v1/search', files=files_for([dataset.query[0].path]), data={'tags': tag})
    assert r.status_code == 400 and 'control characters' in r.json()['detail'], r.text
    r = c.get('/v1/gallery', params={'tags': tag})
    assert r.status_code == 400 and 'control characters' in r.json()['detail'], r.text
    assert c.get('/v1/gallery', params={'limit': 1}).json()['count'] == before


def test_control_characters_in_a_file_name_are_400(client):
    c, _, dataset = client
    before = c.get('/v1/gallery', params={'limit': 1}).json()['count']
    boundary = b'amgboundary'  # by hand: httpx would percent-encode the control character in the name
    body = (b'--%s\r\nContent-Disposition: form-data; name="person_id"\r\n\r\n1\r\n'
            b'--%s\r\nContent-Disposition: form-data; name="images"; filename="a\x01b.jpg"\r\n'
            b'Content-Type: image/jpeg\r\n\r\n%s\r\n--%s--\r\n'
            % (boundary, boundary, Path(dataset.gallery[1].path).read_bytes(), boundary))
    r = c.post('/v1/gallery', content=body, headers={'Content-Type': f'multipart/form-data; boundary={boundary.decode()}'})
    assert r.status_code == 400 and 'control characters' in r.json()['detail'], r.text
    assert c.get('/v1/gallery', params={'limit': 1}).json()['count'] == before


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


# ---- bounded work per request -------------------------------------------------------------------------------------
def _png(size, colour=(120, 60, 30)) -> bytes:
    return png_bytes(Image.new('RGB', size, colour))


def _jpeg(size) -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', size, (90, 140, 200)).save(buf, format='JPEG', quality=80)
    return buf.getvalue()


def test_decoded_pixels_are_bounded_per_request(client):
    c, _, _ = client
    limit = c.app.state.service.settings.max_request_pixels
    side = int((limit / 5) ** 0.5)  # each file is allowed alone; six of them are not
    files = [('images', (f'{i}.png', _png((side, side)), 'image/png')) for i in range(6)]
    before = c.get('/v1/gallery', params={'limit': 1}).json()['count']
    r = c.post('/v1/gallery', files=files, data={'person_id': '3'})
    assert r.status_code == 413 and 'decoded pixels per request' in r.json()['detail'], r.text
    assert c.post('/v1/search', files=files).status_code == 413
    assert c.get('/v1/gallery', params={'limit': 1}).json()['count'] == before
    assert c.post('/v1/search', files=files[:4], data={'min_score': '-1'}).status_code == 200


def test_a_large_jpeg_decodes_small_and_the_same_everywhere(tmp_path):
    data = _jpeg((5000, 4200))  # 21 MP, a few dozen kB
    decoded = decode_upload(data, 'big.jpg', max_bytes=10 ** 7, max_pixels=2_000_000)
    assert decoded.image.size == (1250, 1050)  # 1/4 scale: the smallest that keeps both sides >= DRAFT_SIDE
    (tmp_path / 'big.jpg').write_bytes(data)
    assert open_image(tmp_path / 'big.jpg').size == decoded.image.size  # training/evaluation read it the same way
    small = _jpeg((640, 320))
    assert decode_upload(small, 's.jpg', max_bytes=10 ** 7, max_pixels=10 ** 6).image.size == (640, 320)


def test_the_byte_limit_holds_on_a_chunked_body(tmp_path):
    with make_client(tmp_path, max_request_bytes=64 * 1024) as c:
        def chunks():
            for _ in range(40):
                yield b'x' * 4096

        boundary = b'----amg'
        body = [b'--' + boundary + b'\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
                b'Content-Type: image/png\r\n\r\n', *chunks(), b'\r\n--' + boundary + b'--\r\n']
        r = c.post('/v1/search', content=iter(body),
                   headers={'Content-Type': 'multipart/form-data; boundary=----amg'})
        assert r.status_code == 413 and 'exceeds the limit of 65536' in r.json()['detail'], r.text
        assert 'status="413"' in c.get('/metrics').text


# ---- keys per role, CORS, browser protections -----------------------------------------------------------------------
READ, WRITE = 'read-key', 'write-key'


@pytest.fixture(scope='module', params=['sqlite', 'postgresql'])
def keyed(request, tmp_path_factory, service_model):
    url = database_url_for(request, request.param, tmp_path_factory)
    with make_client(tmp_path_factory.mktemp('keyed'), service_model, database_url=url, read_api_key=READ,
                     write_api_key=WRITE, cors_origins='https://cameras.example') as c:
        yield c


def test_reads_and_writes_need_their_keys(keyed, dataset):
    c = keyed
    upload = dict(files=files_for([dataset.gallery[3].path]), data={'person_id': '5'})
    for headers in ({}, {'X-API-Key': 'wrong'}):
        assert c.post('/v1/gallery', headers=headers, **upload).status_code == 401
    assert c.post('/v1/gallery', headers={'X-API-Key': READ}, **upload).status_code == 403  # known, but reads only
    r = c.post('/v1/gallery', headers={'X-API-Key': WRITE}, **upload)
    assert r.status_code == 201
    item = r.json()['data'][0]
    query = dict(files=files_for([dataset.gallery[3].path]), data={'min_score': '-1'})
    for path in ('/v1/gallery', item['image_url'], item['thumbnail_url'], '/v1/persons/5', '/v1/samples'):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={'X-API-Key': 'wrong'}).status_code == 401, path
    assert c.post('/v1/search', **query).status_code == 401
    for key in (READ, WRITE, API_KEY):  # the write and admin keys also read
        headers = {'X-API-Key': key}
        assert c.get('/v1/gallery', headers=headers).status_code == 200
        assert c.post('/v1/search', headers=headers, **query).json()['results'][0]['person_id'] == 5
    assert c.delete(f"/v1/gallery/{item['id']}", headers={'X-API-Key': READ}).status_code == 403
    assert c.delete(f"/v1/gallery/{item['id']}", headers=ADMIN).status_code == 200  # the admin key writes too
    for path in ('/healthz', '/readyz', '/'):  # health and the page stay open
        assert c.get(path).status_code == 200


def test_writes_follow_the_read_key_when_no_write_key_is_set(tmp_path, service_model, dataset):
    with make_client(tmp_path, service_model, read_api_key=READ) as c:
        upload = dict(files=files_for([dataset.gallery[4].path]), data={'person_id': '6'})
        assert c.post('/v1/gallery', **upload).status_code == 401
        assert c.post('/v1/gallery', headers={'X-API-Key': READ}, **upload).status_code == 201


def test_other_web_sites_cannot_write_and_get_no_cors(keyed, dataset):
    c = keyed
    before = c.get('/v1/gallery', headers={'X-API-Key': READ}).json()['count']
    upload = dict(files=files_for([dataset.gallery[5].path]), data={'person_id': '8'})
    r = c.post('/v1/gallery', headers={'X-API-Key': WRITE, 'Origin': 'https://evil.example'}, **upload)
    assert r.status_code == 403 and 'AMG_CORS_ORIGINS' in r.json()['detail']
    assert c.get('/v1/gallery', headers={'X-API-Key': READ}).json()['count'] == before
    preflight = {'Origin': 'https://evil.example', 'Access-Control-Request-Method': 'POST'}
    assert 'access-control-allow-origin' not in c.options('/v1/search', headers=preflight).headers
    # the configured origin may, and so may the page itself (same host)
    allowed = c.options('/v1/search', headers=dict(preflight, Origin='https://cameras.example'))
    assert allowed.headers['access-control-allow-origin'] == 'https://cameras.example'
    for origin in ('https://cameras.example', 'http://testserver'):
        r = c.post('/v1/gallery', headers={'X-API-Key': WRITE, 'Origin': origin}, **upload)
        assert r.status_code == 201, (origin, r.text)


def test_no_cors_by_default(client):
    c, _, _ = client
    r = c.options('/v1/search', headers={'Origin': 'https://cameras.example', 'Access-Control-Request-Method': 'POST'})
    assert 'access-control-allow-origin' not in r.headers


def test_the_page_sends_security_headers(client):
    c, _, _ = client
    for path in ('/', '/static/app.js', '/healthz'):
        h = c.get(path).headers
        assert h['x-content-type-options'] == 'nosniff' and h['x-frame-options'] == 'DENY'
        csp = h['content-security-policy']
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and 'unsafe-inline' not in csp
    assert 'style=' not in c.get('/').text and '<script>' not in c.get('/').text  # nothing inline for CSP to block


# ---- admin paths ----------------------------------------------------------------------------------------------------
def test_admin_paths_are_confined_to_the_data_roots(tmp_path, service_model, learnable_root):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'weights.pt').write_bytes(b'SECRET')
    with make_client(tmp_path / 'data', service_model, data_roots=str(learnable_root)) as c:
        answers = set()
        for params in ({'data_dir': '/etc'}, {'data_dir': '/nowhere'}, {'data_dir': str(outside)},
                       {'data_dir': str(learnable_root / '..' / 'x')}, {'data_dir': str(learnable_root) + '\x00'}):
            r = c.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'train', 'params': params})
            assert r.status_code == 400, r.text
            answers.add(r.json()['detail'])
        assert answers == {'data_dir: no such folder under the allowed data roots (AMG_DATA_ROOTS)'}
        for path in ('/etc/hostname', str(outside / 'weights.pt'), '/nowhere.pt'):
            r = c.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'prune', 'params': {
                'data_dir': str(learnable_root), 'weight_path': path}})
            assert r.status_code == 400 and r.json()['detail'] == \
                'weight_path: no such file under the allowed data roots (AMG_DATA_ROOTS)'
        for params in ({'img_size': [1024, 1024]}, {'batch_size': 4096}):
            r = c.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'train', 'params': dict(
                params, data_dir=str(learnable_root))})
            assert r.status_code == 422, r.text
        assert c.get('/v1/admin/jobs', headers=ADMIN).json()['count'] == 0


def test_a_failed_job_does_not_quote_the_file_it_read(tmp_path, service_model, learnable_root):
    bogus = learnable_root.parent / 'bogus-weights.pt'
    bogus.write_bytes(b'SECRET-CONTENT')
    with make_client(tmp_path, service_model, data_roots=str(learnable_root.parent)) as c:
        r = c.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'finetune', 'params': {
            'data_dir': str(learnable_root), 'weight_path': str(bogus)}})
        assert r.status_code == 202, r.text
        deadline = time.time() + 120
        while (job := c.get(f"/v1/admin/jobs/{r.json()['id']}", headers=ADMIN).json())['state'] in (
                'queued', 'running'):
            assert time.time() < deadline
            time.sleep(0.5)
        assert job['state'] == 'failed' and 'weights-only torch file' in job['error']
        assert "'S'" not in job['error'] + job['log_tail'] and 'SECRET' not in job['error'] + job['log_tail']


# ---- durable files --------------------------------------------------------------------------------------------------
def test_start_up_sweeps_orphans_and_temporaries(tmp_path, service_model, dataset):
    with make_client(tmp_path, service_model) as c:
        r = c.post('/v1/gallery', files=files_for([dataset.gallery[6].path]), data={'person_id': '9'})
        kept = next((tmp_path / 'images').rglob(f"{r.json()['data'][0]['image_sha256']}*"))
    orphan = tmp_path / 'images' / 'ab' / ('ab' + '0' * 62 + '.jpg')
    temp = tmp_path / 'images' / 'ab' / ('.ab' + '1' * 62 + '.jpg.123.tmp')
    young = tmp_path / 'images' / 'ab' / ('ab' + '2' * 62 + '.jpg')
    orphan.parent.mkdir(exist_ok=True)
    for f in (orphan, temp, young, kept):
        f.touch() if f.exists() else f.write_bytes(b'x')
    old = time.time() - 7200
    for f in (orphan, temp, kept):
        os.utime(f, (old, old))
    with make_client(tmp_path, service_model) as c:  # default grace: an hour
        assert c.get('/healthz').status_code == 200
    assert kept.exists() and young.exists() and not orphan.exists() and not temp.exists()


@pytest.mark.parametrize('db', ['sqlite', 'postgresql'])
def test_an_upload_racing_a_delete_of_the_same_bytes_keeps_its_file(request, db, tmp_path, tmp_path_factory,
                                                                    service_model, dataset, monkeypatch):
    """Replica B uploads the bytes whose last row replica A is deleting, exactly between A's "no other row names
    these bytes" and A's unlink: B must wait for A (the content lock), then find the file gone and write it again."""
    url = database_url_for(request, db, tmp_path_factory)
    settings = Settings(data_dir=tmp_path, model_path=service_model, database_url=url, index_save_seconds=0.5)
    a, b = ServiceState(settings), ServiceState(settings)
    a.startup()
    b.startup()
    try:
        item = decode_upload(Path(dataset.gallery[7].path).read_bytes(), 'same.jpg', 10 ** 7, 10 ** 7)
        meta = [dict(person_id=11, camera_id=1, timestamp=None, tags=[])]
        first = a.gallery.add([item], meta)[0].id
        referenced_contents, raced = crud.referenced_contents, {}

        def count_then_race(**kwargs):
            n = referenced_contents(**kwargs)
            if not raced:  # A has counted: now B uploads the same bytes, and gets a second to finish
                raced['thread'] = threading.Thread(target=lambda: raced.setdefault('row', b.gallery.add([item], meta)))
                raced['thread'].start()
                raced['thread'].join(timeout=1.0)
                raced['finished_inside'] = not raced['thread'].is_alive()
            return n

        monkeypatch.setattr(crud, 'referenced_contents', count_then_race)
        assert a.gallery.delete(first)
        raced['thread'].join(timeout=60)
        assert not raced['finished_inside']  # B waited for A's unlink
        row = raced['row'][0]
        assert Path(row.image_path).is_file()  # ... and wrote the file again
    finally:
        a.shutdown()
        b.shutdown()
