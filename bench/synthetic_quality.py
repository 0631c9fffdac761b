"""Is the synthetic data good enough to measure Re-ID? (shared/reference/synthetic-data.md)

Scores, by the standard Market-1501 protocol, on the test split of a generated dataset:
  * a colour-histogram baseline (no learning: 8x8x8 RGB histograms of 4 horizontal stripes, cosine distance),
  * an untrained LA-Tiny, and
  * trained LA-Tiny checkpoints given with --checkpoint (label=path),
and prints the checks: untrained near chance, trained >= 15 mAP points above the histogram baseline.

    python -m bench.synthetic_quality --data-dir DATA --checkpoint trained=runs/x/best.safetensors
"""
import argparse
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

from models.checkpoints import load_model
from models.la_transformer import create_model
from reid.datasets import ImageRecord, load_dataset
from reid.engine import evaluate_model
from reid.metrics import compute_distance_matrix, evaluate_rank


def histogram_vector(image: Image.Image, stripes: int = 4, bins: int = 8) -> np.ndarray:
    """The no-learning baseline's vector of one crop: a bins^3 RGB histogram per horizontal stripe."""
    arr = np.asarray(image.convert('RGB'))
    parts = []
    for stripe in np.array_split(arr, stripes, axis=0):
        h, _ = np.histogramdd(stripe.reshape(-1, 3), bins=bins, range=[(0, 256)] * 3)
        parts.append(h.ravel() / max(h.sum(), 1))
    return np.concatenate(parts).astype(np.float32)


def histogram_features(records: List[ImageRecord], stripes: int = 4, bins: int = 8) -> np.ndarray:
    return np.asarray([histogram_vector(Image.open(r.path), stripes, bins) for r in records], dtype=np.float32)


def histogram_baseline(data: Path) -> Dict[str, float]:
    ds = load_dataset(data)
    qf, gf = histogram_features(ds.query), histogram_features(ds.gallery)
    q = np.array([[r.pid, r.camid] for r in ds.query])
    g = np.array([[r.pid, r.camid] for r in ds.gallery])
    return evaluate_rank(compute_distance_matrix(qf, gf), q[:, 0], g[:, 0], q[:, 1], g[:, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', type=Path, required=True)
    p.add_argument('--checkpoint', action='append', default=[], help='label=path of a trained model')
    p.add_argument('--img-size', nargs=2, type=int, default=[128, 64], help='for the untrained model')
    a = p.parse_args()
    ds = load_dataset(a.data_dir)
    rows = {'colour histogram (no learning)': histogram_baseline(a.data_dir)}
    torch.manual_seed(0)
    untrained = create_model('amg_vit_tiny_patch16_224', img_size=tuple(a.img_size)).eval()
    rows['LA-Tiny untrained'] = evaluate_model(untrained, ds.query, ds.gallery, progress=False)['standard']
    for item in a.checkpoint:
        label, path = item.split('=', 1)
        rows[f'LA-Tiny {label}'] = evaluate_model(load_model(path), ds.query, ds.gallery, progress=False)['standard']
    print(f'{a.data_dir}: {len(ds.query)} queries, {len(ds.gallery)} gallery images (standard protocol)')
    print('| model | Rank-1 | mAP |\n|---|---|---|')
    for name, r in rows.items():
        print(f"| {name} | {r['rank1']:.2f} | {r['mAP']:.2f} |")
    hist = rows['colour histogram (no learning)']['mAP']
    for name, r in rows.items():
        if name.startswith('LA-Tiny') and name != 'LA-Tiny untrained':
            gap = r['mAP'] - hist
            print(f"check: {name} beats the histogram baseline by {gap:.1f} mAP points (want >= 15): "
                  f"{'PASS' if gap >= 15 else 'FAIL'}")


if __name__ == '__main__':
    main()
