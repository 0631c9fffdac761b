"""Shared fixtures: a small synthetic dataset (made once per session) and tiny model factories."""
from pathlib import Path

import pytest
import torch

from models.la_transformer import create_model
from reid.synthetic import SynthConfig, generate_dataset

TINY_IMG = (64, 32)  # 4x2 patches: 4 LA parts, 9 tokens


def tiny_model(depth: int = 3, num_classes: int = 5, img_size=TINY_IMG, **kwargs):
    torch.manual_seed(0)
    return create_model('amg_vit_tiny_patch16_224', depth=depth, img_size=img_size, num_classes=num_classes,
                        **kwargs)


@pytest.fixture(scope='session')
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('synth')
    generate_dataset(root, SynthConfig(num_ids=12, num_cams=3, imgs_per_id=6, junk=3, distractors=3, seed=1),
                     progress=False)
    return root


@pytest.fixture(scope='session')
def learnable_root(tmp_path_factory) -> Path:
    """Big enough for a tiny model to learn in seconds: 20 train and 20 test identities, 3 cameras."""
    root = tmp_path_factory.mktemp('learnable')
    generate_dataset(root, SynthConfig(num_ids=40, num_cams=3, imgs_per_id=10, junk=2, distractors=2, seed=2,
                                       difficulty=0.3), progress=False)
    return root


@pytest.fixture(scope='session')
def trained_run(learnable_root, tmp_path_factory):
    """LA-Tiny (128x64) trained from scratch for 12 epochs; shared by the training and service tests. Without the
    visibility head (the strong recipe's default adds it): the service tests check plain matching against its
    definitions; tests/app/test_visibility_search.py serves a model with the head."""
    from reid.engine import TrainConfig, train
    out = tmp_path_factory.mktemp('trained')
    cfg = TrainConfig(data_dir=str(learnable_root), name='run', output_dir=str(out), img_size=(128, 64),
                      epochs=12, batch_size=32, lr=5e-4, val_fraction=0.2, seed=0, visibility=0.0)
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope='session')
def postgres_server():
    import shutil
    import tempfile

    from tests.databases import start_postgres
    workdir = Path(tempfile.mkdtemp(prefix='amg-postgres-'))  # not under pytest's 0700 tree: postgres must reach it
    url, why, stop = start_postgres(workdir)
    yield url, why
    stop()
    shutil.rmtree(workdir, ignore_errors=True)


def database_url_for(request, kind: str, tmp_path_factory) -> str:
    """An empty database of ``kind`` ('sqlite' or 'postgresql'); PostgreSQL skips with the reason if unavailable."""
    if kind == 'sqlite':
        return f'sqlite:///{tmp_path_factory.mktemp("sqlite") / "amg.db"}'
    from tests.databases import new_database
    url, why = request.getfixturevalue('postgres_server')
    if url is None:
        pytest.skip(f'PostgreSQL variant skipped: {why}')
    return new_database(url)


@pytest.fixture(params=['sqlite', 'postgresql'])
def database_url(request, tmp_path_factory) -> str:
    """A fresh database per test, on SQLite and on PostgreSQL."""
    return database_url_for(request, request.param, tmp_path_factory)


@pytest.fixture(scope='session')
def trained(synth_root, tmp_path_factory):
    """LA-Tiny (64x32) trained one epoch on synth_root: a teacher for pruning and jobs."""
    from reid.engine import TrainConfig, train
    out = tmp_path_factory.mktemp('runs')
    cfg = TrainConfig(data_dir=str(synth_root), name='teacher', output_dir=str(out), img_size=(64, 32), epochs=1,
                      batch_size=8, val_fraction=0.34, seed=0)
    train(cfg, progress=False)
    return out / 'teacher' / 'best.safetensors'


VECTOR_ENGINES = ['faiss', 'milvus']


def engine_settings(kind: str, tmp_path_factory, uri: str = '', request=None) -> dict:
    """Service settings for vector engine ``kind``: ``faiss`` (the default); ``milvus``: Milvus Lite in this process
    on a fresh ``.db`` file unless ``uri`` names a server; ``milvusserver``: the real Milvus standalone (fixture
    ``milvus_server``, through ``request``). Skips the Milvus variants where their packages are missing."""
    if kind == 'faiss':
        return {}
    if kind == 'milvusserver':
        uri = request.getfixturevalue('milvus_server')
    import uuid
    for module in ('pymilvus', 'milvus_lite'):
        pytest.importorskip(module, reason=f'Milvus variant skipped: {module} is not installed '
                                           '(pip install -e .[milvus])')
    uri = uri or str(tmp_path_factory.mktemp('milvus') / 'milvus.db')
    return dict(vector_engine='milvus', milvus_uri=uri, milvus_collection_prefix=f'amg_{uuid.uuid4().hex[:8]}')


def start_milvus_lite(data_dir: Path, port: int = 0):
    """A Milvus Lite gRPC server in its own process on ``data_dir`` (which several service processes can share: a
    Lite ``.db`` file opened directly belongs to one process); (process, URI). Skips where it cannot start."""
    import socket
    import subprocess
    import sys
    for module in ('pymilvus', 'milvus_lite'):
        pytest.importorskip(module, reason=f'{module} is not installed (pip install -e .[milvus])')
    if not port:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f'server-{port}.log'
    with open(log, 'ab') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'milvus_lite', 'server', '--data-dir', str(data_dir / 'db'),
                                 '--host', '127.0.0.1', '--port', str(port)], stdout=out, stderr=subprocess.STDOUT)
    uri = f'http://127.0.0.1:{port}'
    wait_for_milvus(uri, proc, log, 'Milvus Lite server', timeout=60)
    return proc, uri


def wait_for_milvus(uri: str, proc, log: Path, what: str, timeout: float) -> None:
    """Until the server at ``uri`` answers; skips (killing ``proc``) if it exits or does not answer in time."""
    import time

    from pymilvus import MilvusClient
    deadline = time.time() + timeout
    while True:
        try:
            probe = MilvusClient(uri=uri, timeout=2)
            probe.list_collections()
            probe.close()
            return
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.skip(f'the {what} did not start: {log.read_text()[-400:]}')
            time.sleep(0.3)


@pytest.fixture(scope='session')
def milvus_lite_server(tmp_path_factory):
    """One shared Milvus Lite server for the session's multi-process tests; its URI."""
    proc, uri = start_milvus_lite(tmp_path_factory.mktemp('milvus-server'))
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope='session')
def milvus_server(tmp_path_factory):
    """A real Milvus standalone (the PyPI package ``milvus``, its bundled binary) for the slow tests; its URI.
    Skips with the reason where it cannot start."""
    import socket
    import subprocess
    import sys
    for module in ('pymilvus', 'milvus'):
        pytest.importorskip(module, reason=f'{module} is not installed (pip install -e .[dev])')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    base = tmp_path_factory.mktemp('milvus-standalone')
    log = base / 'launcher.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'tests.milvus_server', str(base / 'server'), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    uri = f'http://127.0.0.1:{port}'
    wait_for_milvus(uri, proc, log, 'Milvus standalone server', timeout=120)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
