"""Edge memory and start per backend: ``amg-reid serve`` with the demo's model size (LA-Tiny 128x64) and gallery
(the demo's synthetic data), from process start to ``/readyz`` 200, then resident memory after a few searches.

    python -m bench.footprint [--baseline-tree DIR] [--rounds 3]

Each backend serves its own copy of one indexed data folder (indexed before any timing). Rounds interleave the
backends. ``--baseline-tree``: a checkout of an older commit (``git worktree add DIR COMMIT``) served the same way
with ONNX Runtime, the "today" of the edge-memory target (it imported torch and loaded the checkpoint into it).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]


def _memory_kb(pid: int) -> Dict[str, int]:
    fields = {}
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            fields[key] = int(value.split()[0])
    return fields


def serve_once(tree: Path, checkpoint: Path, data_dir: Path, backend: str, queries: List[Path]) -> Dict[str, float]:
    """Start a server, time it to ready, search, read its memory, stop it."""
    import socket

    import httpx
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith('AMG_')}
    env.update(PYTHONPATH=str(tree), AMG_BACKEND=backend, AMG_API_KEY='bench')
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, '-m', 'app.cli', 'serve', '--port', str(port), '--data-dir',
                               str(data_dir), '--weight-path', str(checkpoint)], cwd=tree, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}'
    try:
        while True:
            try:
                if httpx.get(url + '/readyz', timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError(f'{backend} server did not start')
            time.sleep(0.05)
        start_s = time.perf_counter() - t0
        ready = httpx.get(url + '/readyz').json()
        for q in queries:
            httpx.post(url + '/v1/search', files=[('images', (q.name, q.read_bytes(), 'image/jpeg'))],
                       timeout=60).raise_for_status()
        memory = _memory_kb(server.pid)
        return dict(start_s=start_s, rss_mb=memory['VmRSS'] / 1024, peak_mb=memory['VmHWM'] / 1024,
                    backend=ready['backend'], precision=ready.get('precision', 'fp32'),
                    gallery=ready['gallery_vectors'])
    finally:
        server.terminate()
        server.wait()


def prepare(workdir: Path, quick: bool) -> Dict[str, Path]:
    """The demo's data and a model of the demo's size, exported (ONNX fp32; INT8 calibrated on training images),
    and one indexed data folder."""
    from app.demo import DEMO_DATA
    from app.serve import index_folder
    from app.settings import Settings
    from models.checkpoints import save_checkpoint
    from models.export import export_onnx, file_sha256
    from models.la_transformer import create_model
    from models.quantize import export_int8
    from reid.datasets import load_dataset
    from reid.synthetic import SynthConfig, generate_dataset
    data = workdir / 'data'
    config = SynthConfig(**{**DEMO_DATA.__dict__, 'num_ids': 24}) if quick else DEMO_DATA
    generate_dataset(data, config, progress=False)
    model = create_model('amg_vit_tiny_patch16_224', img_size=(128, 64), num_classes=0).eval()
    ckpt = save_checkpoint(model, workdir / 'model.safetensors')
    export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    ds = load_dataset(data)
    export_int8(ckpt, [r.path for r in ds.train[:64]])
    indexed = workdir / 'indexed'
    index_folder(data, Settings(data_dir=indexed, model_path=ckpt, backend='onnx'), progress=False)
    return dict(data=data, checkpoint=ckpt, indexed=indexed, queries=[Path(r.path) for r in ds.query[:5]])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--backends', nargs='+', default=['torch', 'onnx', 'onnx-int8', 'openvino'])
    p.add_argument('--baseline-tree', type=Path, default=None, help='an older checkout served with ONNX Runtime')
    p.add_argument('--workdir', type=Path, default=None)
    p.add_argument('--quick', action='store_true', help='24 identities instead of the demo\'s 120')
    a = p.parse_args(argv)
    from models.speed import cpu_description
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix='amg-footprint-'))
    setup = prepare(workdir, a.quick)
    runs = [(b, ROOT, b) for b in a.backends]
    if a.baseline_tree is not None:
        runs.append(('onnx (baseline tree)', a.baseline_tree.resolve(), 'onnx'))
    results: Dict[str, List[Dict]] = {label: [] for label, _, _ in runs}
    for round_ in range(a.rounds):
        for label, tree, backend in runs:
            data_dir = workdir / f'serve-{backend}-{len(results[label])}-{abs(hash(label)) % 1000}'
            shutil.copytree(setup['indexed'], data_dir)
            results[label].append(serve_once(tree, setup['checkpoint'], data_dir, backend, setup['queries']))
            shutil.rmtree(data_dir)
            print(label, round_, json.dumps(results[label][-1]), flush=True)
    print(f'\nCPU: {cpu_description()}; gallery {results[runs[0][0]][0]["gallery"]} vectors, LA-Tiny 128x64')
    print('| served by | backend (precision) | start to /readyz, median s | resident MB after searches | peak MB |')
    print('|---|---|---|---|---|')
    reference_label = runs[-1][0] if a.baseline_tree is not None else runs[0][0]
    reference = statistics.median(r['start_s'] for r in results[reference_label])
    for label, _, _ in runs:
        rows = results[label]
        start = statistics.median(r['start_s'] for r in rows)
        rss = statistics.median(r['rss_mb'] for r in rows)
        print(f"| {label} | {rows[0]['backend']} ({rows[0]['precision']}) | {start:.2f} "
              f"({reference / start:.2f}x faster than {reference_label}) | {rss:.0f} | "
              f"{max(r['peak_mb'] for r in rows):.0f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
