"""Occlusion-aware matching on trained models: plain vs visibility-weighted (mutually visible parts) vs multi-shot
(K crops of one person pooled) mAP on the occluded test split and on its unoccluded twin, the ceiling of
visibility weighting (the generator's own record of its occluders as the visibilities), and how far calibrated
scores set right best matches apart from wrong ones.

    python -m bench.occlusion --workdir demo-data [--shots 2]

``--workdir``: a ``make demo`` folder (its data and its unpruned and pruned models) or a ``bench.pruning`` one
(``runs/NAME/best.safetensors`` / ``pruned.safetensors``); ``--models NAME=PATH`` adds or replaces rows. The
unoccluded twin is the same synthetic data with ``occluded`` off (the same identities, cameras and seed: written
to ``WORKDIR/data-unoccluded`` once). The calibration is fitted on the held-out training identities the training
set aside (the split the checkpoint records), on the score the service answers with.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

MODELS = {'unpruned': ['runs/la-tiny/best.safetensors', 'runs/unpruned/best.safetensors'],
          'control': ['runs/control/pruned.safetensors'],
          'head67+token40': ['runs/la-tiny-head67-token40/pruned.safetensors',
                             'runs/head67+token40/pruned.safetensors']}


def unoccluded_twin(data: Path, out: Path) -> Path:
    """The dataset at ``data`` drawn again without occluders (same config otherwise), written once."""
    from reid.synthetic import SynthConfig, generate_dataset
    if not (out / 'synth.json').exists():
        record = json.loads((data / 'synth.json').read_text())
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()
                  if k in SynthConfig.__dataclass_fields__}
        generate_dataset(out, SynthConfig(**dict(fields, occluded=False)), progress=False)
    return out


def _evaluate(model, ds, shots: int) -> Dict[str, float]:
    from reid.engine import evaluate_model

    def run(**kw):
        return evaluate_model(model, ds.query, ds.gallery, progress=False, protocols=('standard',), **kw)['standard']
    out = dict(plain=run(), multi=run(multi_shot=shots))
    if model.has_visibility:
        out.update(visibility=run(visibility=True), multi_visibility=run(multi_shot=shots, visibility=True))
    return {name: r['mAP'] for name, r in out.items()} | {'plain_rank1': out['plain']['rank1']}


def _oracle(model, ds) -> Optional[float]:
    """mAP with the generator's record of its occluders as both images' visibilities: what visibility weighting
    can gain on these features with a perfect head."""
    import torch

    from reid.engine import extract_features
    from reid.matching import mutual_visibility_scores
    from reid.metrics import eval_market1501
    from reid.recipe import visibility_targets
    if not any(r.hidden for r in ds.query):
        return None
    qf, q_pids, q_cams = extract_features(model, ds.query, progress=False)
    gf, g_pids, g_cams = extract_features(model, ds.gallery, progress=False)

    def truth(records):
        hidden = torch.tensor([r.hidden or (0.0,) * 32 for r in records])
        return visibility_targets([None] * len(records), 1, 1, model.num_parts, hidden).numpy()
    sim = mutual_visibility_scores(qf, gf, truth(ds.query), truth(ds.gallery), model.num_parts)
    return 100 * eval_market1501(1 - sim, q_pids, g_pids, q_cams, g_cams)[1]


def _score_separation(model, ds, split: Dict) -> Dict[str, float]:
    """Median calibrated score of the test queries' best match when it is the right person, and when wrong;
    calibrated on the held-out identities of ``split`` (the checkpoint's record), on the service's score."""
    from reid.data import split_validation
    from reid.engine import calibrate_model, extract_features, extract_visibility
    from reid.matching import ScoreCalibration, mutual_visibility_scores
    _, val = split_validation(ds.train, split['val_fraction'], split['seed'])
    calibration = ScoreCalibration.from_record(calibrate_model(model, val).get('score_calibration'))
    qf, q_pids, q_cams = extract_features(model, ds.query, progress=False)
    gf, g_pids, g_cams = extract_features(model, ds.gallery, progress=False)
    if model.has_visibility:
        q_vis, g_vis = extract_visibility(model, ds.query), extract_visibility(model, ds.gallery)
        sim = mutual_visibility_scores(qf, gf, q_vis, g_vis, model.num_parts)
    else:
        sim = qf @ gf.T
    sim[(q_pids[:, None] == g_pids[None]) & (q_cams[:, None] == g_cams[None])] = -np.inf  # the standard protocol
    sim[:, g_pids == -1] = -np.inf
    best = sim.argmax(1)
    right = g_pids[best] == q_pids
    cosines = sim[np.arange(len(best)), best]
    scores = calibration(cosines) if calibration is not None else np.full_like(cosines, np.nan)
    return dict(right=float(np.median(scores[right])), wrong=float(np.median(scores[~right])),
                right_cos=float(np.median(cosines[right])), wrong_cos=float(np.median(cosines[~right])))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--workdir', type=Path, required=True)
    p.add_argument('--shots', type=int, default=2)
    p.add_argument('--models', nargs='*', default=[], metavar='NAME=PATH', help='more rows (checkpoint paths)')
    a = p.parse_args(argv)
    from models.checkpoints import load_model, read_metadata
    from models.speed import cpu_description
    from reid.datasets import load_dataset
    ds = load_dataset(a.workdir / 'data')
    plain_ds = load_dataset(unoccluded_twin(a.workdir / 'data', a.workdir / 'data-unoccluded'))
    paths = {name: next((a.workdir / c for c in candidates if (a.workdir / c).exists()), None)
             for name, candidates in MODELS.items()}
    paths.update({name: Path(path) for name, path in (m.split('=', 1) for m in a.models)})
    rows = {}
    for name, path in paths.items():
        if path is None:
            continue
        model = load_model(path).eval()
        split = read_metadata(path)[1]['split']
        rows[name] = dict(occluded=_evaluate(model, ds, a.shots), unoccluded=_evaluate(model, plain_ds, a.shots),
                          oracle=_oracle(model, ds), head=model.has_visibility,
                          **_score_separation(model, ds, split))
        print(name, rows[name], flush=True)
    print(f'\nCPU: {cpu_description()}; {a.workdir}: {len(ds.query)} occluded queries, {len(ds.gallery)} gallery '
          f'images; unoccluded twin: {len(plain_ds.query)} queries. Standard Market-1501 protocol, mAP.')
    print(f'| model | head | occluded: plain | visibility-weighted | ceiling (recorded occluders) | multi-shot '
          f'K={a.shots} (+ visibility) | unoccluded: plain | visibility-weighted | best match, median score: right / '
          f'wrong (cosine) |')
    print('|---|---|---|---|---|---|---|---|---|')
    dash = '-'
    for name, r in rows.items():
        o, u = r['occluded'], r['unoccluded']
        vis = f"{o['visibility']:.2f} ({o['visibility'] - o['plain']:+.2f})" if r['head'] else dash
        multi = f"{o['multi']:.2f}" + (f" ({o['multi_visibility']:.2f})" if r['head'] else '')
        uvis = f"{u['visibility']:.2f} ({u['visibility'] - u['plain']:+.2f})" if r['head'] else dash
        ceiling = f"{r['oracle']:.2f} ({r['oracle'] - o['plain']:+.2f})" if r['oracle'] is not None else dash
        print(f"| {name} | {'yes' if r['head'] else 'no'} | {o['plain']:.2f} | {vis} | {ceiling} | {multi} | "
              f"{u['plain']:.2f} | {uvis} | {r['right']:.3f} / {r['wrong']:.3f} ({r['right_cos']:.4f} / "
              f"{r['wrong_cos']:.4f}) |")
    for name, r in rows.items():
        o, u = r['occluded'], r['unoccluded']
        best = o['multi_visibility'] if r['head'] else o['multi']
        single = o['visibility'] if r['head'] else o['plain']
        line = (f"target {name}: multi-shot (K={a.shots}) >= single-shot + 5 mAP: "
                f"{'PASS' if best - single >= 5 else 'FAIL'} ({best - single:+.2f}); right and wrong best matches "
                f"separated by >= 0.3 on median: {'PASS' if r['right'] - r['wrong'] >= 0.3 else 'FAIL'} "
                f"({r['right'] - r['wrong']:.3f})")
        if r['head']:
            gain, cost = o['visibility'] - o['plain'], u['plain'] - u['visibility']
            line += (f"; visibility-weighted >= plain + 3 mAP: {'PASS' if gain >= 3 else 'FAIL'} ({gain:+.2f}); "
                     f"costs <= 0.3 unoccluded: {'PASS' if cost <= 0.3 else 'FAIL'} ({-cost:+.2f})")
        print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
