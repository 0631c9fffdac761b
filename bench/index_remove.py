"""What removing a batch from the exact index costs under its write lock (searches wait that long): FAISS's own
``remove_ids`` against :meth:`storage.index.VectorIndex.remove`, both removing the oldest ids (as the retention
sweeper does) from the same index, beside one single-query search, in one process.

    python -m bench.index_remove [--vectors 1000000] [--dim 1536] [--batch 500] [--rounds 3]
"""
import argparse
import time

import faiss
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--vectors', type=int, default=1_000_000)
    p.add_argument('--dim', type=int, default=1536)
    p.add_argument('--batch', type=int, default=500)
    p.add_argument('--rounds', type=int, default=3)
    a = p.parse_args()
    from models.speed import cpu_description
    from storage.index import VectorIndex
    rng = np.random.default_rng(0)
    index = VectorIndex(a.dim)
    index.reserve(a.vectors)
    for start in range(0, a.vectors, 100_000):
        n = min(100_000, a.vectors - start)
        index.add(np.arange(start, start + n), rng.standard_normal((n, a.dim), dtype=np.float32))
    query = rng.standard_normal((1, a.dim), dtype=np.float32)
    faiss.omp_set_num_threads(1)
    timings = {'search (one query)': [], 'FAISS remove_ids': [], 'VectorIndex.remove': []}
    oldest = 0
    for _ in range(a.rounds):  # interleaved
        t = time.perf_counter()
        index.search(query, 10)
        timings['search (one query)'].append(time.perf_counter() - t)
        ids = np.arange(oldest, oldest + a.batch, dtype=np.int64)
        t = time.perf_counter()
        index.index.remove_ids(faiss.IDSelectorBatch(ids))
        timings['FAISS remove_ids'].append(time.perf_counter() - t)
        ids += a.batch
        t = time.perf_counter()
        index.remove(ids)
        timings['VectorIndex.remove'].append(time.perf_counter() - t)
        oldest += 2 * a.batch
    assert index.ntotal == a.vectors - 2 * a.batch * a.rounds
    print(f'CPU: {cpu_description()}')
    print(f'{a.vectors:,} x {a.dim} exact, batches of {a.batch} oldest ids, {a.rounds} interleaved rounds')
    print('| operation | median ms |')
    print('|---|---|')
    for what, ts in timings.items():
        print(f'| {what} | {1000 * float(np.median(ts)):.1f} |')


if __name__ == '__main__':
    main()
