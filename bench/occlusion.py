"""Occlusion-aware matching on trained models: single-shot vs multi-shot (K crops of one person pooled) mAP on the
occluded test split, and how far calibrated scores set right best matches apart from wrong ones.

    python -m bench.occlusion --workdir demo-data [--shots 2]

``--workdir``: a ``make demo`` folder (its data and its unpruned and pruned models) or a ``bench.pruning`` one
(``runs/NAME/best.safetensors`` / ``pruned.safetensors``). The calibration is fitted on the held-out training
identities the training set aside (the split the checkpoint records), as training now records it.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

MODELS = {'unpruned': ['runs/la-tiny/best.safetensors', 'runs/unpruned/best.safetensors'],
          'control': ['runs/control/pruned.safetensors'],
          'head67+token40': ['runs/la-tiny-head67-token40/pruned.safetensors',
                             'runs/head67+token40/pruned.safetensors']}


def _evaluate(model, ds, shots: int) -> Dict[str, float]:
    from reid.engine import evaluate_model
    single = evaluate_model(model, ds.query, ds.gallery, progress=False, protocols=('standard',))['standard']
    multi = evaluate_model(model, ds.query, ds.gallery, progress=False, protocols=('standard',),
                           multi_shot=shots)['standard']
    return dict(single_mAP=single['mAP'], single_rank1=single['rank1'], multi_mAP=multi['mAP'],
                multi_rank1=multi['rank1'])


def _score_separation(model, ds, split: Dict) -> Dict[str, float]:
    """Median calibrated score of the test queries' best match when it is the right person, and when wrong;
    calibrated on the held-out identities of ``split`` (the checkpoint's record)."""
    from reid.data import split_validation
    from reid.engine import calibrate_model, extract_features
    from reid.matching import ScoreCalibration
    _, val = split_validation(ds.train, split['val_fraction'], split['seed'])
    calibration = ScoreCalibration.from_record(calibrate_model(model, val)['score_calibration'])
    qf, q_pids, q_cams = extract_features(model, ds.query, progress=False)
    gf, g_pids, g_cams = extract_features(model, ds.gallery, progress=False)
    sim = qf @ gf.T
    sim[(q_pids[:, None] == g_pids[None]) & (q_cams[:, None] == g_cams[None])] = -np.inf  # the standard protocol
    sim[:, g_pids == -1] = -np.inf
    best = sim.argmax(1)
    right = g_pids[best] == q_pids
    scores = calibration(sim[np.arange(len(best)), best])
    cosines = sim[np.arange(len(best)), best]
    return dict(right=float(np.median(scores[right])), wrong=float(np.median(scores[~right])),
                right_cos=float(np.median(cosines[right])), wrong_cos=float(np.median(cosines[~right])),
                a=calibration.a, b=calibration.b)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--workdir', type=Path, required=True)
    p.add_argument('--shots', type=int, default=2)
    a = p.parse_args(argv)
    from models.checkpoints import load_model, read_metadata
    from models.speed import cpu_description
    from reid.datasets import load_dataset
    ds = load_dataset(a.workdir / 'data')
    rows = {}
    for name, candidates in MODELS.items():
        path = next((a.workdir / c for c in candidates if (a.workdir / c).exists()), None)
        if path is None:
            continue
        model = load_model(path).eval()
        split = read_metadata(path)[1]['split']
        rows[name] = dict(_evaluate(model, ds, a.shots), **_score_separation(model, ds, split))
        print(name, rows[name], flush=True)
    print(f'\nCPU: {cpu_description()}; {a.workdir}: {len(ds.query)} occluded queries, '
          f'{len(ds.gallery)} gallery images')
    print(f'| model | single-shot mAP / Rank-1 | multi-shot (K={a.shots}) mAP / Rank-1 | multi - single mAP | '
          'median score of the best match: right / wrong (cosine) |')
    print('|---|---|---|---|---|')
    for name, r in rows.items():
        print(f"| {name} | {r['single_mAP']:.2f} / {r['single_rank1']:.2f} | {r['multi_mAP']:.2f} / "
              f"{r['multi_rank1']:.2f} | {r['multi_mAP'] - r['single_mAP']:+.2f} | {r['right']:.3f} / "
              f"{r['wrong']:.3f} ({r['right_cos']:.4f} / {r['wrong_cos']:.4f}) |")
    for name, r in rows.items():
        print(f"target {name}: multi-shot (K={a.shots}) >= single-shot + 5 mAP: "
              f"{'PASS' if r['multi_mAP'] - r['single_mAP'] >= 5 else 'FAIL'}; right and wrong best matches "
              f"separated by >= 0.3 on median: {'PASS' if r['right'] - r['wrong'] >= 0.3 else 'FAIL'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
