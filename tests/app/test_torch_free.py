"""Serving an exported model imports no torch: the whole serving path (start-up, upload, search, the page's
endpoints) runs in a fresh interpreter, which then reports what it imported."""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from models.checkpoints import load_model
from models.export import export_onnx, file_sha256
from tests.app.conftest import ROOT

SERVE_AND_REPORT = textwrap.dedent('''
    import json, sys
    from fastapi.testclient import TestClient
    from app.main import create_app
    from app.settings import Settings

    data_dir, model_path, backend, gallery, query = sys.argv[1:6]
    settings = Settings(data_dir=data_dir, model_path=model_path, backend=backend, api_key='k')
    with TestClient(create_app(settings)) as client:
        ready = client.get('/readyz').json()
        with open(gallery, 'rb') as f:
            up = client.post('/v1/gallery', files=[('images', ('g.jpg', f.read(), 'image/jpeg'))],
                             data={'person_id': '3'})
        with open(query, 'rb') as f:
            found = client.post('/v1/search', files=[('images', ('q.jpg', f.read(), 'image/jpeg'))],
                                data={'min_score': '-1'})
        pages = [client.get(p).status_code for p in ('/', '/v1/gallery', '/metrics', '/healthz')]
    matches = found.json()['results'][0]['matches']
    print(json.dumps(dict(backend=ready['backend'], precision=ready['precision'], upload=up.status_code,
                          search=found.status_code, matches=len(matches), cosine=matches[0]['cosine'],
                          pages=pages, imported=[m for m in ('torch', 'torchvision', 'timm', 'onnx')
                                                 if m in sys.modules])))
''')


@pytest.fixture(scope='module')
def exported(service_model, tmp_path_factory):
    ckpt = shutil.copy(service_model, tmp_path_factory.mktemp('exported') / 'model.safetensors')
    export_onnx(load_model(ckpt), ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    return ckpt


def served_cosine_is_the_models(report, model, dataset, atol=3e-3):
    """The one gallery image's score is the model's cosine of it and the query (min_score=-1 admits any score, so
    the count of matches alone says nothing)."""
    from models.embedder import Embedder
    gallery = next(r for r in dataset.gallery if r.pid > 0)
    g, q = Embedder(model, backend='torch')([gallery.path, dataset.query[0].path])
    return abs(report['cosine'] - float(g @ q)) <= atol


def serve_in_a_fresh_interpreter(tmp_path, model, backend, dataset) -> dict:
    gallery = next(r for r in dataset.gallery if r.pid > 0)
    out = subprocess.run([sys.executable, '-c', SERVE_AND_REPORT, str(tmp_path / 'data'), str(model), backend,
                          gallery.path, dataset.query[0].path], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('backend', ['onnx', 'openvino', 'auto'])
def test_serving_an_export_imports_no_torch(tmp_path, exported, dataset, backend):
    if backend == 'openvino':
        pytest.importorskip('openvino', reason='openvino is not installed (pip install -e .[openvino])')
    report = serve_in_a_fresh_interpreter(tmp_path, exported, backend, dataset)
    assert report['backend'] != 'torch', report
    if backend != 'auto':
        assert report['backend'] == backend
    assert report['upload'] == 201 and report['search'] == 200 and report['matches'] == 1, report
    assert served_cosine_is_the_models(report, exported, dataset, atol=3e-3 if backend == 'onnx' else 2e-2), report
    assert report['pages'] == [200, 200, 200, 200]
    assert report['imported'] == [], f'the serving path imported {report["imported"]}'


def test_the_torch_backend_imports_torch_and_the_check_sees_it(tmp_path, exported, dataset):
    report = serve_in_a_fresh_interpreter(tmp_path, exported, 'torch', dataset)
    assert report['backend'] == 'torch' and report['matches'] == 1
    assert served_cosine_is_the_models(report, exported, dataset)
    assert 'torch' in report['imported']


def test_without_an_export_torch_serves(tmp_path, service_model, dataset):
    bare = shutil.copy(service_model, tmp_path / 'bare.safetensors')  # no .onnx beside it
    report = serve_in_a_fresh_interpreter(tmp_path, bare, 'auto', dataset)
    assert report['backend'] == 'torch' and report['matches'] == 1 and 'torch' in report['imported']
