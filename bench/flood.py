"""Flood: concurrent clients each sending the largest search request the limits allow, against a real server.

Reports the server's peak resident memory (VmHWM), /healthz latency during the flood (polled every 50 ms from the
same client process), the flood's answers by status, and whether a normal search afterwards still finds its image.
Targets (issue "hold under abuse"): peak RSS < 1.5 GB, /healthz p99 < 100 ms, no 5xx, the search afterwards right.

    python -m bench.flood [--clients 8] [--seconds 20]
"""
import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from bench.server import running_server, upload_gallery


def largest_request(settings) -> List[Tuple[str, bytes]]:
    """As many PNG files as a request may carry, each as large (in decoded pixels) as the per-request budget allows,
    with coarse noise so they do not compress to nothing - within the byte limits."""
    from PIL import Image
    n = settings.max_files_per_request
    side = int(min(settings.max_pixels, settings.max_request_pixels // n) ** 0.5)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        coarse = rng.integers(0, 256, (side // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((side, side), Image.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format='PNG')
        files.append((f'flood{i}.png', buf.getvalue()))
    budget = settings.max_request_bytes - 64 * 1024  # multipart framing
    while sum(len(d) for _, d in files) > budget or max(len(d) for _, d in files) > settings.max_upload_bytes:
        files.pop()
    return files


def refused_request(side: int, count: int) -> List[Tuple[str, bytes]]:
    """``count`` PNGs of ``side`` x ``side`` pixels that compress to a few kB each: small in bytes, far over the
    pixel limit, so every one is refused after its body has arrived."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new('RGB', (side, side), (90, 120, 150)).save(buf, format='PNG')
    return [(f'huge{i}.png', buf.getvalue()) for i in range(count)]


def encode(host: str, port: int, path: str, files: List[Tuple[str, bytes]], data: Dict[str, str]) -> bytes:
    import httpx
    request = httpx.Request('POST', f'http://{host}:{port}{path}', data=data,
                            files=[('images', (name, content, 'image/png')) for name, content in files])
    head = [f'POST {path} HTTP/1.1', f'Host: {host}:{port}']
    head += [f'{k}: {v}' for k, v in request.headers.items() if k.lower() != 'host']
    return ('\r\n'.join(head) + '\r\n\r\n').encode() + request.read()


async def _exchange(reader, writer, payload: bytes) -> int:
    writer.write(payload)
    await writer.drain()
    head = await reader.readuntil(b'\r\n\r\n')
    length = int(next(line.split(b':', 1)[1] for line in head.split(b'\r\n')
                      if line.lower().startswith(b'content-length:')))
    await reader.readexactly(length)
    return int(head.split(b' ', 2)[1])


async def _flood(host: str, port: int, payload: bytes, clients: int, seconds: float, server_pid: int) -> Dict:
    statuses: Counter = Counter()
    health_ms: List[float] = []
    rss_samples: List[int] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                try:
                    statuses[await _exchange(reader, writer, payload)] += 1
                except (ConnectionError, asyncio.IncompleteReadError):
                    statuses['connection lost'] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    async def health() -> None:
        probe = f'GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n'.encode()
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, probe)
            health_ms.append(1000 * (time.perf_counter() - t0) if status == 200 else float('inf'))
            rss_samples.append(_rss_kb(server_pid, 'VmRSS'))
            await asyncio.sleep(0.05)
        writer.close()

    await asyncio.gather(health(), *(client() for _ in range(clients)))
    return dict(statuses=dict(statuses), health_ms=health_ms, rss_kb=rss_samples)


def _rss_kb(pid: int, field: str = 'VmHWM') -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    return 0


def run_flood(clients: int = 8, seconds: float = 20.0, img_size=(128, 64), work: Path = None,
              refused: Tuple[int, int] = (0, 0), backend: str = 'torch') -> Dict:
    """Start a server (LA-Tiny, default limits), fill a small gallery, flood it; returns the figures. ``refused``
    = (side, count): flood with ``count`` PNGs of ``side`` pixels square instead (refused by the pixel limit)."""
    import httpx

    from app.settings import Settings
    from models.checkpoints import save_checkpoint
    from models.la_transformer import create_model
    from reid.datasets import load_dataset
    from reid.synthetic import SynthConfig, generate_dataset

    work = Path(work or tempfile.mkdtemp(prefix='amg-flood-'))
    generate_dataset(work / 'data', SynthConfig(num_ids=20, num_cams=3, imgs_per_id=6, seed=0), progress=False)
    ds = load_dataset(work / 'data')
    model = create_model('amg_vit_tiny_patch16_224', img_size=tuple(img_size), num_classes=10).eval()
    ckpt = save_checkpoint(model, work / 'model.safetensors')
    if backend != 'torch':
        from models.export import export_onnx, file_sha256
        export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    with running_server(ckpt, work / 'service', default_settings=True, AMG_BACKEND=backend,
                        AMG_API_KEY='flood-admin') as server:
        url, port = server.url, server.port
        gallery = [g for g in ds.gallery if g.pid > 0]
        upload_gallery(url, gallery)
        files = refused_request(*refused) if refused[0] else largest_request(Settings())
        payload = encode('127.0.0.1', port, '/v1/search', files, {'k': '10'})
        before_kb = _rss_kb(server.pid, 'VmRSS')
        result = asyncio.run(_flood('127.0.0.1', port, payload, clients, seconds, server.pid))
        peak_kb = _rss_kb(server.pid)
        probe = gallery[0]
        after = httpx.post(url + '/v1/search', timeout=60, data={'min_score': '-1'},
                           files=[('images', ('q.jpg', Path(probe.path).read_bytes(), 'image/jpeg'))])
        top = after.json()['results'][0]['matches'][0] if after.status_code == 200 else {}
        health = sorted(result['health_ms'])
        return dict(clients=clients, seconds=seconds, files_per_request=len(files),
                    request_bytes=len(payload), request_pixels=sum(_png_pixels(d) for _, d in files),
                    statuses=result['statuses'], rss_before_mb=before_kb / 1024, peak_rss_mb=peak_kb / 1024,
                    health_p50_ms=statistics.median(health), health_p99_ms=health[int(0.99 * (len(health) - 1))],
                    health_max_ms=health[-1], health_polls=len(health),
                    after_status=after.status_code, after_found_itself=top.get('person_id') == probe.pid and
                    top.get('score', 0) > 0.99)


def _png_pixels(data: bytes) -> int:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return im.size[0] * im.size[1]


def verdicts(r: Dict) -> Dict[str, bool]:
    return {'peak RSS < 1.5 GB': r['peak_rss_mb'] < 1536, '/healthz p99 < 100 ms': r['health_p99_ms'] < 100,
            'no 5xx': not any(str(s).startswith('5') or s == 'connection lost' for s in r['statuses']),
            'a normal search afterwards finds its image': r['after_found_itself']}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--clients', type=int, default=8)
    p.add_argument('--seconds', type=float, default=20)
    p.add_argument('--img-size', nargs=2, type=int, default=[128, 64])
    p.add_argument('--refused', nargs=2, type=int, default=[0, 0], metavar=('SIDE', 'FILES'),
                   help='flood with FILES PNGs of SIDE x SIDE pixels, all over the pixel limit (e.g. 5000 8)')
    p.add_argument('--backend', default='torch', help='AMG_BACKEND of the server (an export is made for others)')
    a = p.parse_args()
    from models.speed import cpu_description
    r = run_flood(a.clients, a.seconds, a.img_size, refused=tuple(a.refused), backend=a.backend)
    print(f"CPU: {cpu_description()}")
    print(f"{r['clients']} clients x {r['seconds']:.0f} s, each request {r['files_per_request']} PNGs, "
          f"{r['request_pixels'] / 1e6:.1f} MP decoded, {r['request_bytes'] / 2 ** 20:.1f} MiB (the default limits)")
    print('| answers by status | peak RSS (before) | /healthz p50 / p99 / max | polls | search afterwards |')
    print('|---|---|---|---|---|')
    print(f"| {json.dumps(r['statuses'])} | {r['peak_rss_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB) | "
          f"{r['health_p50_ms']:.1f} / {r['health_p99_ms']:.1f} / {r['health_max_ms']:.1f} ms | {r['health_polls']} | "
          f"{r['after_status']}, {'found itself' if r['after_found_itself'] else 'WRONG'} |")
    for name, ok in verdicts(r).items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")


if __name__ == '__main__':
    main()
