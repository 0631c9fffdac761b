"""What the audit trail costs a search: one service in this process (fastapi's TestClient, an LA-Tiny checkpoint
with random weights at 128x64 - a fast model, so the trail's share is at its largest - and a 200-image synthetic
gallery), one client searching in interleaved rounds with the trail recording and with its ``record`` replaced by
a no-op (nothing queued, nothing written). Target: p50 with the trail <= 1.05x without.

    python -m bench.audit_cost [--rounds 10] [--searches 100] [--database-url postgresql+psycopg://...]
"""
import argparse
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models.checkpoints import save_checkpoint
from models.la_transformer import create_model
from reid.datasets import load_dataset
from reid.synthetic import SynthConfig, generate_dataset


def cpu_name() -> str:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
        if line.startswith('model name'):
            return line.split(':', 1)[1].strip()
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--searches', type=int, default=100, help='per round and mode')
    p.add_argument('--database-url', default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    work = Path(tempfile.mkdtemp(prefix='amg-audit-bench-'))
    generate_dataset(work / 'synth', SynthConfig(num_ids=40, num_cams=3, imgs_per_id=6, seed=3), progress=False)
    ds = load_dataset(work / 'synth')
    torch.manual_seed(0)
    model = create_model('amg_vit_tiny_patch16_224', img_size=(128, 64), num_classes=10)
    ckpt = save_checkpoint(model, work / 'tiny.safetensors')
    settings = Settings(data_dir=work / 'service', model_path=ckpt, database_url=a.database_url,
                        max_files_per_request=1000, batch_wait_ms=0)
    with TestClient(create_app(settings)) as client:
        gallery = [r for r in ds.gallery if r.pid > 0][:200]
        files = [('images', (Path(r.path).name, Path(r.path).read_bytes(), 'image/jpeg')) for r in gallery]
        assert client.post('/v1/gallery', files=files, data={'camera_id': '1'}).status_code == 201
        service = client.app.state.service
        query = Path(ds.query[0].path).read_bytes()
        recording = service.audit.record

        def one_round() -> list:
            latencies = []
            for _ in range(a.searches):
                t0 = time.perf_counter()
                r = client.post('/v1/search', files=[('images', ('q.jpg', query, 'image/jpeg'))],
                                data={'k': '10', 'camera_id': '1'})
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
            return latencies

        one_round()  # warm-up
        p50 = {'with': [], 'without': []}
        for _ in range(a.rounds):
            for mode in ('with', 'without'):
                service.audit.record = recording if mode == 'with' else (lambda event: None)
                p50[mode].append(statistics.median(one_round()))
        service.audit.record = recording
    on, off = statistics.median(p50['with']), statistics.median(p50['without'])
    print(f'CPU: {cpu_name()}; database: {settings.database_url.split(":")[0]}; {a.rounds} rounds x '
          f'{a.searches} searches per mode')
    print(f'search p50 with the audit trail {on * 1000:.2f} ms, without {off * 1000:.2f} ms: '
          f'{on / off:.3f}x (target <= 1.05x) {"PASS" if on / off <= 1.05 else "FAIL"}')


if __name__ == '__main__':
    main()
