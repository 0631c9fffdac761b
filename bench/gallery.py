"""Million-vector galleries: the service's ``compressed`` index against exact search, on LA-Base-sized vectors.

The vectors are synthetic embeddings with identity structure (not uniform noise): every identity has a centre in a
``latent``-dimensional space with a falling spectrum (variance of dimension j ~ 1/sqrt(j)), each image adds its own
variation around it (``--intra`` of the centre's scale), the latent vector is mapped to ``--dim`` dimensions by a
fixed random matrix, and isotropic noise carrying ``--noise`` of the energy is added in all dimensions before
L2-normalising. ``--per-id`` images per identity; queries are fresh images of gallery identities.

The gallery is generated in chunks from per-chunk seeds (never held in memory as a whole: 1M x 10,752 float32 is
43 GB); one pass adds each chunk to the index and to an exact running top-k of the queries (the reference).
Prints recall@10 against exact search and ms/query (one batch of all queries, and one query at a time) for each
nprobe, with the target's verdict (recall@10 >= 0.95 at <= 2 ms/query).

    python -m bench.gallery [--n 1000000] [--dim 10752] [--per-id 16] [--queries 200] [--pca-dim 256]
                            [--nprobe 16,32,64,128]
"""
import argparse
import time
from typing import Tuple

import faiss
import numpy as np
from tqdm import tqdm

from storage.index import VectorIndex


class EmbeddingGenerator:
    def __init__(self, n: int, dim: int, per_id: int, latent: int, intra: float, noise: float, seed: int) -> None:
        self.n, self.dim, self.per_id, self.intra, self.seed = n, dim, per_id, intra, seed
        rng = np.random.default_rng(seed)
        self.scale = (np.arange(1, latent + 1) ** -0.25).astype(np.float32)  # std: variance ~ 1/sqrt(j)
        self.basis = (rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)).astype(np.float32)
        self.centres = rng.standard_normal((max(1, n // per_id), latent), dtype=np.float32) * self.scale
        signal = float(np.mean(np.sum((self.centres[:1000] @ self.basis) ** 2, axis=1))) * (1 + intra ** 2)
        self.noise_std = np.sqrt(noise / (1 - noise) * signal / dim) if noise > 0 else 0.0

    def _draw(self, identities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        z = self.centres[identities] + self.intra * self.scale * rng.standard_normal(
            (len(identities), len(self.scale)), dtype=np.float32)
        x = z @ self.basis
        if self.noise_std:
            x += self.noise_std * rng.standard_normal(x.shape, dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def chunk(self, start: int, stop: int, chunk_index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 1, chunk_index))
        return self._draw(np.arange(start, stop) // self.per_id % len(self.centres), rng)

    def sample(self, count: int, tag: int, chunk: int = 20_000) -> np.ndarray:
        """Fresh images of random gallery identities (queries, training sample), made by chunks (bounded memory)."""
        rng = np.random.default_rng((self.seed, 2, tag))
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            out[start:stop] = self._draw(rng.integers(0, len(self.centres), stop - start), rng)
        return out


def build(gen: EmbeddingGenerator, xq: np.ndarray, train: np.ndarray, pca_dim: int, chunk: int, k: int
          ) -> Tuple[VectorIndex, np.ndarray, float, float]:
    """(compressed index with every vector, exact top-k ids of the queries, train seconds, add seconds)."""
    t0 = time.perf_counter()
    index = VectorIndex(gen.dim, pca_dim=pca_dim).trained_like('compressed', train, expected=gen.n)
    t_train = time.perf_counter() - t0
    best_d = np.full((len(xq), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(xq), k), -1, dtype=np.int64)
    t_add = 0.0
    for c, start in enumerate(tqdm(range(0, gen.n, chunk), desc='gallery chunks', unit='chunk')):
        stop = min(gen.n, start + chunk)
        xb = gen.chunk(start, stop, c)
        t0 = time.perf_counter()
        index.add(np.arange(start, stop), xb)
        t_add += time.perf_counter() - t0
        sims = xq @ xb.T  # the exact reference, in the full dimension
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        cand_d = np.concatenate([best_d, np.take_along_axis(sims, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + start], axis=1)
        order = np.argsort(-cand_d, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
    return index, best_i, t_train, t_add


def feature_spectrum(checkpoint: str, data_dir: str, limit: int = 3000) -> None:
    """Share of the variance of a trained model's gallery features in its top principal components (what
    ``--noise`` stands for)."""
    from models.checkpoints import load_model
    from reid.datasets import load_dataset
    from reid.engine import extract_features
    features, _, _ = extract_features(load_model(checkpoint).eval(), load_dataset(data_dir).gallery[:limit],
                                      progress=False)
    energy = np.linalg.svd(features - features.mean(0), compute_uv=False) ** 2
    share = np.cumsum(energy) / energy.sum()
    print(f'{len(features)} gallery features of {features.shape[1]} dims; variance in the top k components: ' +
          ', '.join(f'{k}: {share[min(k, len(share)) - 1]:.3f}' for k in (64, 128, 256)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=1_000_000)
    p.add_argument('--dim', type=int, default=10752, help='LA-Base: 14 parts x 768')
    p.add_argument('--per-id', type=int, default=16,
                   help='gallery images per identity (Market-1501 and DukeMTMC galleries: 16-26)')
    p.add_argument('--latent', type=int, default=128)
    p.add_argument('--intra', type=float, default=0.5, help='per-image variation, relative to the centres')
    p.add_argument('--noise', type=float, default=0.02,
                   help='share of the energy in full-dimensional noise (our trained LA-Tiny: ~0.3%% beyond 256 PCs)')
    p.add_argument('--queries', type=int, default=200)
    p.add_argument('--train', type=int, default=160_000, help='vectors sampled to train the PCA and IVF')
    p.add_argument('--pca-dim', type=int, default=256)
    p.add_argument('--nprobe', default='16,32,64,128')
    p.add_argument('--chunk', type=int, default=20_000)
    p.add_argument('--threads', type=int, default=None, help='FAISS threads (default: all cores)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--spectrum', nargs=2, metavar=('CHECKPOINT', 'DATA_DIR'),
                   help="only print the PCA spectrum of a trained model's gallery features (then exit)")
    a = p.parse_args()
    if a.spectrum:
        feature_spectrum(*a.spectrum)
        return
    if a.threads:
        faiss.omp_set_num_threads(a.threads)
    k = 10
    gen = EmbeddingGenerator(a.n, a.dim, a.per_id, a.latent, a.intra, a.noise, a.seed)
    xq = gen.sample(a.queries, tag=0)
    train = gen.sample(min(a.train, a.n), tag=1)
    index, truth, t_train, t_add = build(gen, xq, train, a.pca_dim, a.chunk, k)
    del train
    ivf = faiss.extract_index_ivf(index.index)
    bytes_per_vector = ivf.code_size + 8  # codes + the 64-bit id in the inverted lists
    print(f'{a.n:,} synthetic vectors of {a.dim} dims ({a.per_id} per identity, latent {a.latent}, '
          f'noise {a.noise:.0%}), {a.queries} queries; index PCA{min(a.pca_dim, a.dim)},IVF{ivf.nlist},SQfp16 '
          f'({bytes_per_vector} bytes a vector, {a.n * bytes_per_vector / 2**30:.2f} GiB; exact float32: '
          f'{a.n * a.dim * 4 / 2**30:.1f} GiB); train {t_train:.0f} s on {min(a.train, a.n):,} vectors, '
          f'add {t_add:.0f} s; {faiss.omp_get_max_threads()} FAISS threads')
    print('| nprobe | recall@10 vs exact | ms/query (batch of all queries) | ms/query (one at a time) |')
    print('|---|---|---|---|')
    passed = []
    for nprobe in [int(x) for x in a.nprobe.split(',')]:
        ivf.nprobe = index.nprobe = nprobe
        index.search(xq[:8], k)  # warm-up
        t0 = time.perf_counter()
        _, found = index.search(xq, k)
        batch_ms = 1000 * (time.perf_counter() - t0) / len(xq)
        t0 = time.perf_counter()
        for i in range(len(xq)):
            index.search(xq[i:i + 1], k)
        single_ms = 1000 * (time.perf_counter() - t0) / len(xq)
        recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
        print(f'| {nprobe} | {recall:.3f} | {batch_ms:.2f} | {single_ms:.2f} |')
        if recall >= 0.95 and single_ms <= 2.0:
            passed.append(nprobe)
    verdict = f'PASS (nprobe {passed[0]})' if passed else 'FAIL'
    print(f'target: recall@10 >= 0.95 against exact search at <= 2 ms/query (one query at a time): {verdict}')


if __name__ == '__main__':
    main()
