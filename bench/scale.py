"""Galleries of 100,000 and 1,000,000 LA-Tiny 128x64 vectors (1,536 dims) with their rows in SQLite: per vector engine
and index kind, one query's search p50/p99 unfiltered, excluding the query's camera, in a time window and with one
tag; recall@10 against exact search under the same filter; ingest rate; ``GET /v1/gallery?tags=...&limit=20``
through the API; and a replica's start-up time and peak RSS (its own process, ``ServiceState.startup``).

Rows: person ``i // 16``, camera ``i % 30`` (30 cameras), timestamps spread evenly over four weeks, one of 50 tags
each (``tag{i % 50}``: a tag filter admits 2%); vectors from bench.gallery's identity-structured generator (16
images an identity). The time window is the middle week (25%).

    python -m bench.scale [--sizes 100000,1000000] [--kinds exact,approx,compressed] [--nprobe 16,64]
                          [--milvus-uri URI] [--milvus-index HNSW:M=16,efConstruction=200:ef=128]
                          [--workdir bench-scale] [--queries 50] [--skip-replica]

``--milvus-uri``: also measure Milvus there (a server: ``http://host:19530``); Milvus Lite is too slow for this
(docs/deployment.md, "Which vector engine").
"""
import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from bench.gallery import EmbeddingGenerator
from storage.engine import Attributes, GalleryFilter, VectorEngine, time_key

DIM, CAMERAS, TAGS, PER_ID = 1536, 30, 50, 16
START = datetime(2026, 11, 1)
SPAN = timedelta(weeks=4)
CHUNK = 20_000


def cpu_name() -> str:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
        if line.startswith('model name'):
            return line.split(':', 1)[1].strip()
    return 'unknown CPU'


def rows_of(start: int, stop: int, n: int) -> Attributes:
    i = np.arange(start, stop)
    times = [START + SPAN * (int(j) / n) for j in i]
    return Attributes(person=i // PER_ID, camera=i % CAMERAS, time=np.array([time_key(t) for t in times]),
                      tags=[(f'tag{j % TAGS}',) for j in i])


def generator(n: int) -> EmbeddingGenerator:
    return EmbeddingGenerator(n, DIM, PER_ID, latent=256, intra=0.6, noise=0.3, seed=0)


def make_gallery(folder: Path, n: int) -> Path:
    """A data dir whose SQLite database holds ``n`` gallery rows with float16 vectors by one registered (untrained
    LA-Tiny 128x64) model, as an upload through the service leaves them; the image files are not written."""
    from sqlalchemy import insert

    from models.checkpoints import save_checkpoint
    from models.la_transformer import create_model
    from storage import crud
    from storage.db import GalleryImage, GalleryTag, GalleryVector, make_engine, make_sessionmaker
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / 'ready'
    if done.exists():
        return folder
    db = folder / 'amg.db'
    db.unlink(missing_ok=True)
    checkpoint = save_checkpoint(create_model('amg_vit_tiny_patch16_224', img_size=(128, 64), num_classes=10),
                                 folder / 'model.safetensors')
    engine = make_engine(f'sqlite:///{db}')
    Session = make_sessionmaker(engine)
    with Session.begin() as s:
        model = crud.add_model(session=s, path=str(checkpoint), name='bench')
        crud.activate_model(session=s, model_id=model.id)
    gen = generator(n)
    for chunk, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        attrs = rows_of(start, stop, n)
        vectors = gen.chunk(start, stop, chunk).astype(np.float16)
        ids = np.arange(start + 1, stop + 1)
        with engine.begin() as conn:
            conn.execute(insert(GalleryImage.__table__), [
                dict(id=int(i), person_id=int(p), camera_id=int(c), timestamp=START + SPAN * (float(i - 1) / n),
                     source_name='bench', image_sha256=f'{i:064x}', image_path=f'/nonexistent/{i}.jpg',
                     model_version=model.id, created_at=START)
                for i, p, c in zip(ids, attrs.person, attrs.camera)])
            conn.execute(insert(GalleryTag.__table__), [dict(image_id=int(i), tag=t[0], position=0)
                                                        for i, t in zip(ids, attrs.tags)])
            conn.execute(insert(GalleryVector.__table__), [dict(image_id=int(i), model_id=model.id, vector=v.tobytes())
                                                           for i, v in zip(ids, vectors)])
        print(f'  rows {stop:,}/{n:,}', file=sys.stderr, end='\r')
    done.write_text('ok')
    return folder


def filters_for(queries: int) -> Dict[str, List[GalleryFilter]]:
    week = (START + SPAN * 0.375, START + SPAN * 0.625)
    return {'unfiltered': [GalleryFilter()] * queries,
            'exclude camera': [GalleryFilter(exclude_camera=q % CAMERAS) for q in range(queries)],
            'time window': [GalleryFilter(after=week[0], before=week[1])] * queries,
            'one tag': [GalleryFilter.of(tags=['tag3'])] * queries}


def fill(engine: VectorEngine, n: int) -> float:
    """Upsert the gallery chunk by chunk; rows per second."""
    gen, spent = generator(n), 0.0
    for chunk, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        xb, attrs = gen.chunk(start, stop, chunk).astype(np.float16).astype(np.float32), rows_of(start, stop, n)
        t0 = time.perf_counter()
        engine.upsert(np.arange(start + 1, stop + 1), xb, attrs)
        spent += time.perf_counter() - t0
    return n / spent


def measure(engine: VectorEngine, xq: np.ndarray, reference: Dict[str, list], exact: bool = False) -> Dict[str, dict]:
    """p50/p99 ms of one query at a time and recall@10 against ``reference`` (which an ``exact`` engine fills; NaN
    without one)."""
    out = {}
    for name, flts in filters_for(len(xq)).items():
        times, found = [], []
        engine.search(xq[:1], 10, flts[:1])  # warm
        for q in range(len(xq)):
            t0 = time.perf_counter()
            (_, ids), = engine.search(xq[q:q + 1], 10, flts[q:q + 1])
            times.append(time.perf_counter() - t0)
            found.append(ids)
        if exact:
            reference[name] = found
        recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / max(1, len(b))
                          for a, b in zip(found, reference[name])]) if name in reference else float('nan')
        out[name] = dict(p50=1000 * float(np.median(times)), p99=1000 * float(np.percentile(times, 99)),
                         recall=float(recall))
    return out


def faiss_engine(kind: str, n: int, train_size: int):
    from storage.faiss_engine import FaissEngine
    base = FaissEngine(DIM, nprobe=16, pca_dim=256)
    if kind == 'exact':
        return base
    return base.trained_like(kind, generator(n).sample(min(n, train_size), tag=7), expected=n)


def tag_listing(data_dir: Path, repeats: int = 20) -> Dict[str, float]:
    """``GET /v1/gallery`` with one tag and with a camera, through the API (no model needed), p50 ms."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    settings = Settings(data_dir=data_dir, model_path=None, index_dir=data_dir / 'listing-index')
    out = {}
    with TestClient(create_app(settings)) as client:
        for name, params in (('tag', {'tags': 'tag3', 'limit': 20}), ('tag+camera', {'tags': 'tag3', 'camera_id': '3',
                                                                                     'limit': 20})):
            client.get('/v1/gallery', params=params)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = client.get('/v1/gallery', params=params)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()['data']) == 20, r.text
            out[name] = 1000 * float(np.median(times))
    return out


def replica_start(data_dir: Path, env: Dict[str, str]) -> Dict[str, float]:
    """Start-up of a replica with no index file of its own, in a fresh process: seconds and peak RSS (MB)."""
    index_dir = data_dir / f'replica-{time.time_ns()}'
    out = subprocess.run([sys.executable, '-m', 'bench.scale', '--replica', str(data_dir), '--index-dir',
                          str(index_dir)], capture_output=True, text=True, env=dict(os.environ, **env), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _replica_main(data_dir: Path, index_dir: Path) -> None:
    from app.settings import Settings
    from app.state import ServiceState
    t0 = time.perf_counter()
    settings = Settings(data_dir=data_dir, model_path=None, index_dir=index_dir, backend='torch')
    state = ServiceState(settings)
    state.startup()
    seconds = time.perf_counter() - t0
    count = state.current.engine.count()
    state.shutdown()
    # VmHWM, not ru_maxrss: Linux carries the parent's maxrss across fork and exec
    hwm = next(int(line.split()[1]) for line in Path('/proc/self/status').read_text().splitlines()
               if line.startswith('VmHWM:'))
    print(json.dumps(dict(seconds=seconds, peak_rss_mb=hwm / 1024, vectors=count)))


def set_nprobe(engine, nprobe: int) -> None:
    import faiss
    engine.index.nprobe = nprobe
    faiss.extract_index_ivf(engine.index.index).nprobe = nprobe


def replicas(n: int, data_dir: Path, args, starts: Dict) -> None:
    """A FAISS replica's start (no index file: all vectors read from the database); with Milvus, a replica's first
    start on the filled collection (lists its ids against the database's) and a later one (follows the log)."""
    starts[(n, 'faiss')] = replica_start(data_dir, {})
    print(json.dumps(dict(n=n, replica='faiss', **starts[(n, 'faiss')])), flush=True)
    if args.milvus_uri:
        env = dict(AMG_VECTOR_ENGINE='milvus', AMG_MILVUS_URI=args.milvus_uri, AMG_MILVUS_COLLECTION_PREFIX=f'bench{n}',
                   AMG_MILVUS_INDEX_TYPE=args.milvus_index.split(':')[0])
        for which in ('milvus, first start', 'milvus, later start'):
            starts[(n, which)] = replica_start(data_dir, env)
            print(json.dumps(dict(n=n, replica=which, **starts[(n, which)])), flush=True)


def _params(text: str) -> Dict[str, int]:
    return {k: int(v) for k, v in (item.split('=') for item in text.split(',') if item)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', default='100000,1000000')
    p.add_argument('--kinds', default='exact,approx,compressed')
    p.add_argument('--milvus-uri', default='')
    p.add_argument('--milvus-consistency', default='Session', help="searches' consistency level (the service's "
                                                                   'default: Session)')
    p.add_argument('--milvus-reuse', action='store_true', help='keep a collection of the right size from an earlier '
                                                               'run (no ingest rate then)')
    p.add_argument('--milvus-index', default='HNSW:M=16,efConstruction=200:ef=128',
                   help='TYPE:build params:search params, e.g. IVF_FLAT:nlist=4096:nprobe=32')
    p.add_argument('--workdir', type=Path, default=Path('bench-scale'))
    p.add_argument('--queries', type=int, default=50)
    p.add_argument('--train-size', type=int, default=50_000, help='vectors an IVF/PCA index trains on')
    p.add_argument('--nprobe', default='16', help='IVF lists searched (AMG_NPROBE), a comma list: each measured '
                                                  'on the same index')
    p.add_argument('--skip-replica', action='store_true')
    p.add_argument('--replica', type=Path, help=argparse.SUPPRESS)
    p.add_argument('--index-dir', type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.replica:
        return _replica_main(args.replica, args.index_dir)
    print(f'CPU: {cpu_name()}, {os.cpu_count()} cores')
    results: List[Tuple] = []
    starts = {}
    for n in [int(s) for s in args.sizes.split(',')]:
        print(f'gallery of {n:,}', file=sys.stderr)
        data_dir = make_gallery(args.workdir / f'gallery-{n}', n)
        listing = tag_listing(data_dir)
        print(f'{n:,} rows: GET /v1/gallery?tags=tag3&limit=20 p50 {listing["tag"]:.1f} ms, with camera_id '
              f'{listing["tag+camera"]:.1f} ms', flush=True)
        xq = generator(n).sample(args.queries, tag=3)
        reference: Dict[str, list] = {}
        for kind in [k for k in args.kinds.split(',') if k]:
            engine = faiss_engine(kind, n, args.train_size)
            rate = fill(engine, n)
            for nprobe in ([0] if kind == 'exact' else [int(p) for p in args.nprobe.split(',')]):
                if nprobe:
                    set_nprobe(engine, nprobe)
                label = kind if kind == 'exact' else f'{kind}, nprobe {nprobe}'
                row = measure(engine, xq, reference, exact=kind == 'exact')
                results.append((n, 'faiss', label, rate, row))
                print(json.dumps(dict(n=n, engine='faiss', kind=label, ingest_per_s=rate, **row)), flush=True)
            del engine
        if args.milvus_uri:
            from storage.milvus_engine import MilvusEngine
            from storage.milvus_engine import collection_name
            index_type, build, search = (args.milvus_index.split(':') + ['', ''])[:3]
            # the collection a replica of this gallery's model (id 1) uses with prefix benchN: measured below too
            engine = MilvusEngine(args.milvus_uri, collection_name(f'bench{n}', 1), DIM, index_type=index_type,
                                  index_params=_params(build), search_params=_params(search), timeout=600,
                                  consistency=args.milvus_consistency)
            if args.milvus_reuse and engine.exists() and engine.count() == n:
                rate, waited = float('nan'), engine.wait_indexed()  # measured by an earlier run
            else:
                engine.drop()
                engine.create()
                rate = fill(engine, n)
                waited = engine.wait_indexed()
            row = measure(engine, xq, reference)
            results.append((n, 'milvus', args.milvus_index, rate, row))
            print(json.dumps(dict(n=n, engine='milvus', kind=args.milvus_index, ingest_per_s=rate,
                                  index_build_s=waited, **row)), flush=True)
        if not args.skip_replica:
            replicas(n, data_dir, args, starts)
    if not args.skip_replica:
        small = make_gallery(args.workdir / 'gallery-1000', 1000)
        if args.milvus_uri:
            from storage.milvus_engine import MilvusEngine, collection_name
            index_type, build, _ = (args.milvus_index.split(':') + ['', ''])[:3]
            engine = MilvusEngine(args.milvus_uri, collection_name('bench1000', 1), DIM, index_type=index_type,
                                  index_params=_params(build))
            engine.drop()
            engine.create()
            fill(engine, 1000)
        replicas(1000, small, args, starts)

    print(f'\nCPU: {cpu_name()}; one query at a time, ms (p50 / p99), recall@10 against exact search under the same '
          'filter')
    print('| rows | engine | index | ingest rows/s | unfiltered | exclude camera | time window | one tag | '
          'recall@10 (unf. / camera / window / tag) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for n, name, kind, rate, row in results:
        cells = ' | '.join(f"{row[f]['p50']:.2f} / {row[f]['p99']:.2f}" for f in filters_for(1))
        recall = ' / '.join(f"{row[f]['recall']:.3f}" for f in filters_for(1))
        print(f'| {n:,} | {name} | {kind} | {rate:,.0f} | {cells} | {recall} |')
    print('\ntarget: a filtered search <= 1.5x the same engine\'s unfiltered one and <= +3 ms (p50)')
    for n, name, kind, _, row in results:
        base = row['unfiltered']['p50']
        for f in ('exclude camera', 'time window', 'one tag'):
            got = row[f]['p50']
            ok = got <= 1.5 * base and got <= base + 3
            print(f'  {n:,} {name} {kind} {f}: {got:.2f} vs {base:.2f} ms {"PASS" if ok else "FAIL"}')
    if starts:
        print('\n| rows | replica | start s | peak RSS MB |')
        print('|---|---|---|---|')
        for (n, which), s in sorted(starts.items()):
            print(f"| {n:,} | {which} | {s['seconds']:.1f} | {s['peak_rss_mb']:.0f} |")


if __name__ == '__main__':
    main()
