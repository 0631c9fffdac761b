"""Service fixtures: apps over temporary data dirs, a trained model, and synthetic gallery/query images."""
import io
from pathlib import Path
from typing import List, Tuple

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from reid.datasets import load_dataset

API_KEY = 'test-key'


def make_client(data_dir: Path, model_path=None, **overrides) -> TestClient:
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
    return Path(trained_run[1]['best'])


@pytest.fixture(scope='session')
def dataset(learnable_root):
    return load_dataset(learnable_root)
