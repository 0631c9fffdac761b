"""What the retention sweeper costs a search: one `amg-reid serve` (LA-Tiny head67+token40 at 224x224, FAISS exact)
with a gallery padded to N vectors (bench.load.pad_gallery), one client searching alone, and while the sweeper
removes a tenth of the gallery (rows aged in the database, so the next sweep finds them), in interleaved rounds.
Then: the rows the sweeper passed are gone from the database and the index, and the index holds the rest. Target:
the client's p99 while the sweeper runs <= 1.5x alone.

    python -m bench.retention [--vectors 100000] [--rounds 3] [--seconds 10] [--batch 500] [--img-size 224 224]
                              [--milvus-uri http://127.0.0.1:19530]

``--milvus-uri``: the service's vectors in that Milvus server (``python -m tests.milvus_server DIR 19530``) instead
of FAISS, a collection of its own (dropped at the end), or with ``--milvus-prefix`` the collection of that prefix
(kept); the rounds start once Milvus has indexed every row. ``--workdir``: keep the data, model and padded gallery
there; a run again over it skips straight to the service's start (with ``--milvus-prefix``, over the same
collection).

(1,000,000 rows: ``--img-size 128 64``, 1,536-dim vectors, 6 GB in the index, as bench.scale measures.)
"""
import argparse
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.load import KEY, pad_gallery, percentiles, run_clients
from bench.server import running_server, upload_gallery


def milvus_collection(uri: str, prefix: str, Session):
    """The service's collection of its active model (storage.milvus_engine.collection_name)."""
    from storage import crud
    from storage.milvus_engine import MilvusEngine, collection_name
    with Session() as s:
        model = crud.active_model(session=s)
        dim = len(next(iter(crud.get_vectors(session=s, model_id=model.id,
                                              image_ids=[int(crud.image_id_array(session=s)[0])]).values())))
    return MilvusEngine(uri, collection_name(prefix, model.id), dim, timeout=600.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--vectors', type=int, default=100_000)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--seconds', type=float, default=10)
    p.add_argument('--batch', type=int, default=500, help='AMG_RETENTION_BATCH')
    p.add_argument('--img-size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                   help="the model's input: 224 224 gives 2,688-dim vectors, 128 64 gives 1,536")
    p.add_argument('--milvus-uri', help='a Milvus server for the vectors (default: FAISS exact, in the service)')
    p.add_argument('--ready-minutes', type=float, default=90, help='how long the index may take to fill')
    p.add_argument('--workdir', type=Path, help='where the data, model and service live (default: a new temp dir); '
                   'a padded gallery there is used as it is')
    p.add_argument('--milvus-prefix', help='the service\'s AMG_MILVUS_COLLECTION_PREFIX (default: one of its own)')
    a = p.parse_args()
    import httpx
    from sqlalchemy import func, select, update

    from bench.backends import pruned_models
    from models.checkpoints import save_checkpoint
    from models.speed import cpu_description
    from reid.datasets import load_dataset
    from reid.synthetic import SynthConfig, generate_dataset
    from storage.db import GalleryImage, make_engine, make_sessionmaker, utcnow

    work = a.workdir or Path(tempfile.mkdtemp(prefix='amg-retention-'))
    service, ckpt = work / 'service', work / 'model.safetensors'
    env = dict(AMG_API_KEY=KEY, AMG_RETENTION_DAYS='30', AMG_RETENTION_SECONDS='1', AMG_RETENTION_BATCH=str(a.batch))
    prefix = a.milvus_prefix or f'bench_retention_{os.getpid()}'
    if a.milvus_uri:
        env.update(AMG_VECTOR_ENGINE='milvus', AMG_MILVUS_URI=a.milvus_uri, AMG_MILVUS_COLLECTION_PREFIX=prefix)
    Session = make_sessionmaker(make_engine(f'sqlite:///{service / "amg.db"}'))
    if not (service / 'amg.db').exists():
        generate_dataset(work / 'data', SynthConfig(num_ids=20, num_cams=3, imgs_per_id=6, seed=0), progress=False)
        ds = load_dataset(work / 'data')
        model = pruned_models(tuple(a.img_size), len({r.pid for r in ds.train}))['head67+token40'].eval()
        save_checkpoint(model, ckpt)
        with running_server(ckpt, service, **env) as server:
            upload_gallery(server.url, [g for g in ds.gallery if g.pid > 0])
    with Session() as s:
        have = s.scalar(select(func.count(GalleryImage.id)))
    if have > a.vectors:
        raise SystemExit(f'{work} holds {have} rows, more than --vectors {a.vectors}: give another --workdir')
    pad_gallery(service, a.vectors)
    ds = load_dataset(work / 'data')
    per_round = a.vectors // 10 // a.rounds
    image = ds.query[0].path
    print(f'CPU: {cpu_description()}; vectors in ' + (f'Milvus at {a.milvus_uri}' if a.milvus_uri else 'FAISS exact'))
    try:
        began = time.monotonic()
        with running_server(ckpt, service, log=work / 'serve.log', **env) as server:
            def vectors() -> int:  # -1 until the service answers (its start fills the engine first: minutes)
                try:
                    return httpx.get(server.url + '/readyz', timeout=30).json().get('gallery_vectors', -1)
                except httpx.TransportError:
                    return -1
            deadline = time.time() + a.ready_minutes * 60
            while vectors() != a.vectors:
                if time.time() > deadline:
                    raise RuntimeError(f'the index was not ready in {a.ready_minutes:g} minutes')
                time.sleep(1)
            filled = time.monotonic() - began
            if a.milvus_uri:  # searches before Milvus has indexed everything scan segments by brute force
                collection = milvus_collection(a.milvus_uri, prefix, Session)
                indexed = collection.wait_indexed(timeout=a.ready_minutes * 60)
                collection.close()
                print(f'the service filled Milvus in {filled:.0f} s; indexed {indexed:.0f} s later')
            run_clients(server.url, 1, 2.0, image)  # warm-up
            alone, sweeping, sweeps, expired = [], [], [], []
            for _ in range(a.rounds):
                alone += run_clients(server.url, 1, a.seconds, image)['latencies_ms']
                with Session.begin() as s:  # the oldest padding rows, as if stored 31 days ago
                    fresh = GalleryImage.created_at > utcnow() - timedelta(days=1)
                    ids = list(s.scalars(select(GalleryImage.id).where(GalleryImage.source_name == 'padding', fresh)
                                         .order_by(GalleryImage.id).limit(per_round)))
                    s.execute(update(GalleryImage).where(GalleryImage.id.in_(ids))
                              .values(created_at=utcnow() - timedelta(days=31)))
                expired += ids
                t0, before = time.monotonic(), vectors()
                sweeping += run_clients(server.url, 1, a.seconds, image)['latencies_ms']
                while vectors() > before - len(ids):  # the sweep's end (it may outlast the client's window)
                    time.sleep(0.2)
                sweeps.append(time.monotonic() - t0)
            with Session() as s:
                left = s.scalar(select(func.count(GalleryImage.id)).where(GalleryImage.id.in_(expired[:30_000])))
            final = vectors()
    finally:  # a collection of this run's own is dropped, one named by --milvus-prefix kept for the next
        if a.milvus_uri and not a.milvus_prefix:
            try:
                collection = milvus_collection(a.milvus_uri, prefix, Session)
                try:
                    collection.drop()
                finally:
                    collection.close()
            except Exception as e:  # noqa: BLE001 - the run's own error, if any, is the one to see
                print(f'the collection of prefix {prefix} was not dropped: {e}')
    (a50, a99), (b50, b99) = percentiles(alone), percentiles(sweeping)
    print(f'{a.vectors} vectors, {len(expired)} expired in {a.rounds} rounds of {per_round}; one client, '
          f'{a.seconds:.0f} s a round alone and while the sweeper runs (batches of {a.batch})')
    print('| p50 ms alone | p99 alone | p50 while sweeping | p99 while sweeping | p99 ratio | sweep s per round |')
    print('|---|---|---|---|---|---|')
    print(f'| {a50:.1f} | {a99:.1f} | {b50:.1f} | {b99:.1f} | {b99 / a99:.2f} | '
          f'{", ".join(f"{x:.1f}" for x in sweeps)} |')
    print(f'expired rows left in the database: {left}; index {final} vectors (expected {a.vectors - len(expired)})')
    print(f"target: p99 while sweeping <= 1.5x alone: {'PASS' if b99 / a99 <= 1.5 else 'FAIL'} ({b99 / a99:.2f})")


if __name__ == '__main__':
    main()
