"""Service fixtures: apps over temporary data dirs, a trained model, and synthetic gallery/query images."""
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from reid.datasets import load_dataset

API_KEY = 'test-key'
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='session', autouse=True)
def jobs_may_read_the_test_folders(tmp_path_factory):
    """Admin jobs read datasets and weights only under AMG_DATA_ROOTS: here, this session's temporary folders
    (servers started by the tests inherit it)."""
    previous = os.environ.get('AMG_DATA_ROOTS')
    os.environ['AMG_DATA_ROOTS'] = str(tmp_path_factory.getbasetemp().resolve())
    yield
    if previous is None:
        os.environ.pop('AMG_DATA_ROOTS')
    else:
        os.environ['AMG_DATA_ROOTS'] = previous


# the tests upload whole galleries in one request: more files than the default limit (sized for clients)
MANY_FILES = 1000


def ready_with(client, timeout: float = 30.0, **want):
    """/readyz's body once it says ``want`` (it reports the maintenance loop's last check, renewed every
    ``sync_seconds`` after a change)."""
    def check():
        body = client.get('/readyz').json()
        return body if all(body.get(k) == v for k, v in want.items()) else None
    return wait_for(check, timeout, f'/readyz with {want}')


def wait_for(check, timeout: float = 30.0, what: str = 'the condition'):
    """``check()``'s first truthy value, polled every 0.2 s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f'{what} did not hold within {timeout} s')


def make_client(data_dir: Path, model_path=None, **overrides) -> TestClient:
    overrides.setdefault('max_files_per_request', MANY_FILES)
    settings = Settings(data_dir=data_dir, model_path=model_path, api_key=API_KEY, index_save_seconds=0.5,
                        **overrides)
    return TestClient(create_app(settings))


def files_for(paths: List[str], field: str = 'images') -> List[Tuple[str, Tuple[str, bytes, str]]]:
    return [(field, (Path(p).name, Path(p).read_bytes(), 'image/jpeg')) for p in paths]


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    return buf.getvalue()


@pytest.fixture(scope='session')
def service_model(trained_run) -> Path:
    return Path(trained_run[1].checkpoint)


@pytest.fixture(scope='session')
def visibility_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny model with a visibility head whose visibilities spread over (0, 1) (a fresh head says 0.5
    everywhere)."""
    import torch

    from models.checkpoints import save_checkpoint
    from tests.conftest import tiny_model
    model = tiny_model(num_classes=4, visibility=True)
    with torch.no_grad():
        model.visibility_weight.normal_(0, 0.3)
        model.visibility_bias.normal_(0, 1.0)
    return save_checkpoint(model, tmp_path_factory.mktemp('vis') / 'vis.safetensors')


@pytest.fixture(scope='session')
def dataset(learnable_root):
    return load_dataset(learnable_root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, model: Path, port: int, **env_vars: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), AMG_INDEX_SAVE_SECONDS='0.3', AMG_API_KEY='k',
               AMG_MAX_FILES_PER_REQUEST=str(MANY_FILES), **env_vars)
    proc = subprocess.Popen([sys.executable, '-m', 'app.cli', 'serve', '--port', str(port), '--data-dir',
                             str(data_dir), '--weight-path', str(model)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f'http://127.0.0.1:{port}/readyz', timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, 'server exited during start-up'
        time.sleep(0.3)
    proc.kill()
    raise AssertionError('server did not become ready')
