"""A throwaway `amg-reid serve` for the service benchmarks (bench.load, bench.flood): started on a free loopback
port with a checkpoint, ready when /readyz says so, stopped on exit; and a gallery upload."""
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_server(checkpoint: Path, data_dir: Path, default_settings: bool = False, log: Optional[Path] = None,
                   **env: str) -> Iterator[subprocess.Popen]:
    """Yields the server process (its URL as ``.url``, its port as ``.port``). ``default_settings``: drop the
    caller's AMG_* variables, so the defaults (limits) apply; ``log``: a file for its output (default: none);
    ``env``: AMG_* settings for this server."""
    import httpx
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not (default_settings and k.startswith('AMG_'))}
    output = subprocess.DEVNULL if log is None else open(log, 'ab')
    try:
        server = subprocess.Popen([sys.executable, '-m', 'app.cli', 'serve', '--port', str(port), '--data-dir',
                                   str(data_dir), '--weight-path', str(checkpoint)],
                                  env=dict(base, PYTHONPATH=str(ROOT), **env), stdout=output,
                                  stderr=subprocess.DEVNULL if log is None else subprocess.STDOUT)
    finally:
        if log is not None:  # the server has its own copy
            output.close()
    server.port, server.url = port, f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            try:
                if httpx.get(server.url + '/readyz', timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        server.wait()


def upload_gallery(url: str, records: Sequence, headers=None) -> None:
    """POST the records' images to /v1/gallery in one request, with their person ids."""
    import httpx
    files = [('images', (Path(r.path).name, Path(r.path).read_bytes(), 'image/jpeg')) for r in records]
    httpx.post(url + '/v1/gallery', files=files, data={'person_id': ','.join(str(r.pid) for r in records)},
               headers=headers or {}, timeout=120).raise_for_status()
