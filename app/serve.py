"""Running the service, bulk-loading a gallery, and the demo's serve step."""
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Sequence

from tqdm import tqdm

from .imaging import ImageRejected, decode_upload
from .settings import Settings

__all__ = ['serve', 'index_folder', 'serve_demo']

_logger = logging.getLogger(__name__)


def serve(settings: Settings, host: str = '127.0.0.1', port: int = 8000) -> None:
    import uvicorn

    from .main import create_app
    uvicorn.run(create_app(settings), host=host, port=port, log_level='info')


def index_folder(folder: Path, settings: Settings, split: str = 'gallery', batch_size: int = 64,
                 progress: bool = True) -> Dict[str, int]:
    """Bulk-load a dataset split (Market-1501 or ImageFolder layout) into the gallery of the configured service.

    Run it while the server is stopped (or upload through POST /v1/gallery): a running server reconciles its index
    with the database only at start-up.
    """
    from reid.datasets import load_dataset

    from .state import ServiceState
    ds = load_dataset(Path(folder))
    records = {'gallery': ds.gallery, 'query': ds.query, 'train': ds.train,
               'all': ds.gallery + ds.query}.get(split)
    if records is None:
        raise ValueError(f'unknown split {split!r}; choose from gallery, query, train, all')
    records = [r for r in records if r.pid >= 0]  # junk images have no identity to store
    state = ServiceState(settings)
    state.startup()
    state.snapshot()  # fails with the "how to get a model" message when none is configured
    added, skipped = 0, 0
    try:
        bar = tqdm(total=len(records), desc='indexing', unit='img', disable=not progress)
        for start in range(0, len(records), batch_size):
            items, metas = [], []
            for r in records[start:start + batch_size]:
                try:
                    items.append(decode_upload(Path(r.path).read_bytes(), Path(r.path).name,
                                               settings.max_upload_bytes, settings.max_pixels))
                    metas.append(dict(person_id=r.pid, camera_id=r.camid, tags=[split]))
                except (ImageRejected, OSError) as e:
                    _logger.warning('skipping %s: %s', r.path, e)
                    skipped += 1
            if items:
                added += len(state.gallery.add(items, metas))
            bar.update(len(records[start:start + batch_size]))
        bar.close()
    finally:
        state.shutdown()
    return dict(added=added, skipped=skipped)


def ingest_when_ready(base_url: str, api_key: str, recordings: Sequence[dict], timeout: float = 600.0) -> None:
    """Once the service at ``base_url`` is ready, submit each recording (a ``POST /v1/admin/videos`` body) as an
    ingest job, as an operator would; the service answers a recording it has ingested with that job, so a second
    demo run adds nothing."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f'{base_url}/readyz', timeout=5):
                break
        except (urllib.error.URLError, OSError):  # not up yet, or 503 while it loads
            if time.time() > deadline:
                _logger.warning('the service did not become ready: demo videos not ingested')
                return
            time.sleep(1.0)
    for body in recordings:
        req = urllib.request.Request(f'{base_url}/v1/admin/videos', data=json.dumps(body).encode(), method='POST',
                                     headers={'Content-Type': 'application/json', 'X-API-Key': api_key})
        try:
            with urllib.request.urlopen(req, timeout=60) as answer:
                job = json.loads(answer.read())
            print(f"      demo video {Path(body['video_path']).name} on camera {body['camera_id']}: ingest job "
                  f"{job['id']} ({job['state']}; the page's Videos tab follows it)", flush=True)
        except urllib.error.HTTPError as e:
            _logger.warning('demo video %s refused: %s', body['video_path'], e.read().decode(errors='replace'))
        except (urllib.error.URLError, OSError) as e:
            _logger.warning('demo video %s not submitted: %s', body['video_path'], e)


def serve_demo(workdir: Path, checkpoint: Path, data: Path, host: str = '127.0.0.1', port: int = 8000,
               api_key: Optional[str] = None, backend: str = 'auto', recordings: Sequence[dict] = ()) -> None:
    """Serve ``checkpoint`` on ``backend`` (AMG_BACKEND: its fresh export; else torch) with
    the synthetic gallery indexed (once) under ``workdir/service``, the query split offered as one-click
    samples on the page, ``data`` open to the admin tab's prune jobs, and ``recordings`` (under
    ``workdir/service``) ingested as jobs once it is ready (:func:`ingest_when_ready`)."""
    import os
    import secrets
    key_file = workdir / 'service-api-key.txt'
    if api_key is None:
        if not key_file.exists():  # readable by its owner only
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'w') as f:
                f.write(secrets.token_urlsafe(24))
        api_key = key_file.read_text().strip()
    # the admin tab's prune jobs read the dataset (the first root: the folder the page suggests)
    roots = ','.join(str(folder.resolve()) for folder in (data, workdir / 'service'))
    settings = Settings(data_dir=workdir / 'service', model_path=checkpoint, api_key=api_key,
                        sample_queries_dir=data / 'query', backend=backend, data_roots=roots)
    marker = workdir / 'service' / 'indexed.txt'
    if not marker.exists():
        t0 = time.perf_counter()
        counts = index_folder(data, settings)
        marker.write_text(str(counts))
        print(f'      gallery indexed in {time.perf_counter() - t0:.0f} s: {counts}', flush=True)
    print(f'admin API key: {api_key} (header X-API-Key; stored in {key_file})', flush=True)
    if recordings:  # a daemon: Ctrl-C stops the server, and this with it
        client_host = '127.0.0.1' if host in ('0.0.0.0', '::', '') else host
        threading.Thread(target=ingest_when_ready, args=(f'http://{client_host}:{port}', api_key, recordings),
                         name='demo-videos', daemon=True).start()
    serve(settings, host=host, port=port)
