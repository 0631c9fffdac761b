"""The docs' command blocks that say they run as written do run, the service's curl lines against a live server
included.

A block runs as written when the line before its fence is ``<!-- runs as written -->``; ``<!-- runs as written:
starts the server -->`` marks a server, started in the background (on a free port instead of 8000) and awaited on
/readyz, that the blocks after it talk to. A doc's blocks run in order in one empty folder, under bash with ``-e``,
``amg-reid`` on the PATH, and ``curl`` failing on an HTTP error.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import httpx
import pytest

from tests.app.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
BLOCK = re.compile(r'^<!-- runs as written(?:: (?P<role>[^>]*?))? -->\n```bash\n(?P<body>.*?)^```', re.M | re.S)
SERVER = 'starts the server'
PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error "$@"; echo; }\n'


@dataclass
class Block:
    role: Optional[str]
    body: str


def runnable_blocks(path: Path) -> List[Block]:
    return [Block(m['role'], m['body']) for m in BLOCK.finditer(path.read_text())]


def _amg_reid_on_path(folder: Path) -> dict:
    """The environment the blocks run in: ``amg-reid`` is this checkout's CLI, as an install would make it."""
    bin_dir = folder / '.bin'
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / 'amg-reid'
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m app.cli "$@"\n')
    shim.chmod(0o755)
    return dict(os.environ, PYTHONPATH=str(ROOT), PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')


class DocRunner:
    """Runs blocks in ``folder``; a server block stays up until :meth:`close` (after its jobs ended)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.env, self.port = folder, _amg_reid_on_path(folder), free_port()
        self.server: Optional[subprocess.Popen] = None
        self.admin_key: Optional[str] = None

    def _on_our_port(self, text: str) -> str:
        return text.replace('127.0.0.1:8000', f'127.0.0.1:{self.port}').replace('--port 8000', f'--port {self.port}')

    def run(self, block: Block, timeout: float = 900) -> str:
        body = self._on_our_port(block.body)
        if block.role == SERVER:
            return self._start(body)
        result = subprocess.run(['bash', '-c', PRELUDE + body], cwd=self.folder, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        assert result.returncode == 0, f'{block.body}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}'
        return result.stdout

    def _start(self, command: str) -> str:
        assert self.server is None, 'one server per doc'
        key = re.search(r'AMG_API_KEY=(\S+)', command)
        self.admin_key = key and key[1]
        log = open(self.folder / 'server.log', 'w')
        self.server = subprocess.Popen(['bash', '-c', command], cwd=self.folder, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.server.poll() is None, (self.folder / 'server.log').read_text()[-3000:]
            try:
                if httpx.get(f'http://127.0.0.1:{self.port}/readyz', timeout=2).status_code == 200:
                    return ''
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError('the server did not become ready:\n' + (self.folder / 'server.log').read_text()[-3000:])

    def close(self, job_timeout: float = 600) -> None:
        if self.server is None:
            return
        try:
            if self.admin_key:  # a job the blocks started ends before its server (and its worker) stops
                deadline = time.time() + job_timeout
                while time.time() < deadline:
                    jobs = httpx.get(f'http://127.0.0.1:{self.port}/v1/admin/jobs',
                                     headers={'X-API-Key': self.admin_key}, timeout=10).json()['data']
                    if not any(j['state'] in ('queued', 'running', 'cancelling') for j in jobs):
                        for job in jobs:
                            assert job['state'] == 'succeeded', job
                        break
                    time.sleep(1)
                else:
                    raise AssertionError(f'jobs still running after {job_timeout} s: {jobs}')
        finally:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=60)


def run_doc(blocks: List[Block], folder: Path) -> None:
    runner = DocRunner(folder)
    try:
        for block in blocks:
            runner.run(block)
    finally:
        runner.close()


def _section(path: Path, title: str) -> List[Block]:
    text = path.read_text().split(f'\n## {title}\n', 1)[1].split('\n## ', 1)[0]
    return [Block(m['role'], m['body']) for m in BLOCK.finditer(text)]


def test_readme_has_the_two_commands_and_stays_a_front_door():
    text = (ROOT / 'README.md').read_text()
    assert re.search(r'^make demo', text, re.M) and re.search(r'^make test', text, re.M)
    assert len(text.splitlines()) <= 180


def test_relative_links_in_the_docs_resolve():
    for doc in DOCS:
        for target in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', doc.read_text()):
            assert (doc.parent / target).exists(), f'{doc.relative_to(ROOT)} links to a missing {target}'


def test_every_amg_reid_command_in_the_docs_parses():
    """The blocks that cannot run here (real datasets, GPUs) still name flags the CLI has."""
    import shlex

    from app.cli import build_parser
    parser = build_parser()
    commands = []
    for doc in DOCS:
        for block in re.findall(r'^```bash\n(.*?)^```', doc.read_text(), re.M | re.S):
            for line in block.replace('\\\n', ' ').splitlines():
                words = [w for w in shlex.split(line, comments=True)]
                while words and re.match(r'^[A-Z_]+=', words[0]):  # VAR=value before the command
                    words.pop(0)
                if words[:1] == ['amg-reid']:
                    commands.append(words)
    assert len(commands) >= 15
    for words in commands:
        try:
            parser.parse_args(words[1:])
        except SystemExit:
            pytest.fail(f'the CLI does not parse: {shlex.join(words)}')


def test_the_runnable_blocks_are_found():
    blocks = runnable_blocks(ROOT / 'docs' / 'getting-started.md')
    assert [b.role for b in blocks].count(SERVER) == 1
    assert sum(line.startswith('curl ') for b in blocks for line in b.body.splitlines()) >= 8
    assert any('amg-reid train' in b.body for b in blocks)


def test_the_service_section_runs_as_written_on_the_walkthroughs_folders(tmp_path, learnable_root, trained_run):
    """The getting-started service section (index, serve, every curl line, a prune job to its end) on folders laid
    out as the walk-through leaves them, filled from the test fixtures (a trained tiny model, a small dataset)."""
    shutil.copytree(learnable_root, tmp_path / 'data' / 'synth')
    for checkpoint in ('readme/best.safetensors', 'readme-both/pruned.safetensors'):  # the teacher, the served
        (tmp_path / 'runs' / checkpoint).parent.mkdir(parents=True)
        shutil.copy(trained_run[1].checkpoint, tmp_path / 'runs' / checkpoint)
    blocks = _section(ROOT / 'docs' / 'getting-started.md', 'The service, on the same folders')
    assert blocks[0].body.startswith('amg-reid index') and blocks[1].role == SERVER
    run_doc(blocks, tmp_path)
    assert (tmp_path / 'data' / 'service' / 'amg.db').exists()


@pytest.mark.slow
@pytest.mark.parametrize('doc', [d for d in DOCS if runnable_blocks(d)], ids=lambda d: d.name)
def test_every_runnable_block_of_the_docs_runs_as_written(doc, tmp_path):
    """Each doc from scratch (for getting-started: data, training, pruning, export, then the service)."""
    run_doc(runnable_blocks(doc), tmp_path)
    if doc.name == 'getting-started.md':
        assert (tmp_path / 'runs' / 'readme-both' / 'pruned.onnx').exists()
