"""The README's walk-through runs as written (on generated data)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def walkthrough_commands():
    text = (ROOT / 'README.md').read_text()
    block = text.split('A walk-through on generated data', 1)[1].split('```bash', 1)[1].split('```', 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith('amg-reid ')]


def test_readme_has_the_two_commands():
    text = (ROOT / 'README.md').read_text()
    assert re.search(r'^make demo', text, re.M) and re.search(r'^make test', text, re.M)


@pytest.mark.slow
def test_walkthrough_runs_as_written(tmp_path):
    commands = walkthrough_commands()
    assert len(commands) >= 8
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for command in commands:
        args = shlex.split(command)[1:]
        result = subprocess.run([sys.executable, '-m', 'app.cli', *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f'{command}\n{result.stderr[-3000:]}'
    assert (tmp_path / 'runs' / 'readme-both' / 'pruned.onnx').exists()
    assert (tmp_path / 'data' / 'service' / 'amg.db').exists()
