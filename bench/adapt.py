"""Adaptation to a new site without labels: direct transfer, adapted (crops only; crops + tracks), supervised on the
new site (the ceiling), for the unpruned model and head67+token40 (prune, then adapt, by itself or taught by the
adapted unpruned model; adapt, then prune).

Site A (``reid.synthetic`` site 0, labelled) trains the model; site B (site 1: other people, backgrounds, light and
colour cast, camera height, blur, noise, clothing palette) is the new installation: its unlabelled training split is
what adaptation reads, its labelled test split what every row is scored on (standard protocol). The tracks are what a
tracker gives on site B's training split: one track per person per camera (their crops), each given a time span on
its camera, so that about ``--overlap`` people are in view at once: tracks of one camera that overlap in time are
cannot-link pairs. Every stage is cached in --workdir, so a rerun only scores.

    python -m bench.adapt --workdir bench-adapt          # about 30 minutes on 2 CPU cores
"""
import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from models.speed import cpu_description
from models.checkpoints import load_model
from pruning.schedule import PruneConfig, prune
from reid.adapt import AdaptConfig, adapt
from reid.datasets import UnlabelledCrop, load_dataset, parse_market_name
from reid.engine import TrainConfig, evaluate_model, train
from reid.synthetic import SynthConfig, generate_dataset

_logger = logging.getLogger('bench.adapt')
PRUNED = dict(prune_mode='head_attn', head_rate=0.67, token_rate=0.4)  # bench.pruning's head67+token40
# the pruned model adapted with the adapted unpruned one as its teacher (its clusters and distillation targets)
TAUGHT = 'head67+token40: prune on A, then adapt taught by the adapted unpruned model'


def site_data(work: Path, a, site: int) -> Path:
    root = work / f'site{site}'
    if not (root / 'synth.json').exists():
        generate_dataset(root, SynthConfig(num_ids=a.ids, num_cams=a.cams, imgs_per_id=a.imgs_per_id,
                                           difficulty=a.difficulty, seed=a.seed, site=site))
    return root


def site_tracks(data: Path, overlap: float, track_seconds: float, seed: int) -> List[UnlabelledCrop]:
    """Site B's training crops as a tracker gives them: a track per (person, camera), on a timeline per camera
    where about ``overlap`` tracks are open at once."""
    rng = np.random.default_rng(seed)
    crops = sorted(Path(data, 'bounding_box_train').glob('*.jpg'))
    keys = sorted({parse_market_name(p.name) for p in crops})
    per_camera: Dict[int, int] = {}
    for _, cam in keys:
        per_camera[cam] = per_camera.get(cam, 0) + 1
    spans = {}
    for i, (pid, cam) in enumerate(keys):
        start = float(rng.uniform(0, per_camera[cam] * track_seconds / overlap))
        spans[(pid, cam)] = (i, start, start + track_seconds)
    return [UnlabelledCrop(str(p), cam, *spans[(pid, cam)]) for p in crops
            for pid, cam in [parse_market_name(p.name)]]


def score(checkpoint: Path, data: Path) -> Dict[str, float]:
    ds = load_dataset(data)
    out = evaluate_model(load_model(checkpoint), ds.query, ds.gallery, batch_size=64, protocols=('standard',),
                         progress=False)['standard']
    return dict(mAP=round(out['mAP'], 2), rank1=round(out['rank1'], 2))


def timed(minutes: Dict[str, float], name: str, path: Path, run) -> Path:
    if not path.exists():
        t0 = time.perf_counter()
        run()
        minutes[name] = round((time.perf_counter() - t0) / 60, 1)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', type=Path, default=Path('bench-adapt'))
    p.add_argument('--ids', type=int, default=160)
    p.add_argument('--cams', type=int, default=6)
    p.add_argument('--imgs-per-id', type=int, default=16)
    p.add_argument('--difficulty', type=float, default=0.3)
    p.add_argument('--epochs', type=int, default=20, help='training on site A')
    p.add_argument('--adapt-epochs', type=int, default=8)
    p.add_argument('--supervised-epochs', type=int, default=8, help='the ceiling: site B\'s labels, from A\'s model')
    p.add_argument('--eps', type=float, default=0.6)
    p.add_argument('--k1', type=int, default=20)
    p.add_argument('--distill', type=float, default=1.0)
    p.add_argument('--lr', type=float, default=1e-4, help='adaptation and the ceiling\'s fine-tuning')
    p.add_argument('--overlap', type=float, default=3.0, help='tracks open at once on a camera')
    p.add_argument('--pruned', action=argparse.BooleanOptionalAction, default=True)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
    work, runs = a.workdir, str(a.workdir / 'runs')
    t_start = time.perf_counter()
    minutes: Dict[str, float] = {}
    site_a, site_b = site_data(work, a, 0), site_data(work, a, 1)
    tracks = site_tracks(site_b, a.overlap, 10.0, a.seed)
    common = dict(img_size=(128, 64), batch_size=64, seed=a.seed)
    source = timed(minutes, 'train on A', work / 'runs' / 'site-a' / 'best.safetensors', lambda: train(TrainConfig(
        data_dir=str(site_a), name='site-a', output_dir=runs, epochs=a.epochs, lr=5e-4, **common), progress=False))
    ceiling = timed(minutes, 'supervised on B', work / 'runs' / 'supervised-b' / 'best.safetensors',
                    lambda: train(TrainConfig(data_dir=str(site_b), weight_path=str(source), name='supervised-b',
                                              output_dir=runs, epochs=a.supervised_epochs, lr=a.lr, blockwise=False,
                                              warmup_epochs=0, **common), progress=False))

    def adapted(name: str, start: Path, crops, use_tracks: bool = True, teacher: Optional[Path] = None) -> Path:
        cfg = AdaptConfig(weight_path=str(start), name=name, output_dir=runs, epochs=a.adapt_epochs, eps=a.eps,
                          k1=a.k1, distill=a.distill, lr=a.lr, tracks=use_tracks, seed=a.seed,
                          teacher_path=None if teacher is None else str(teacher))
        return timed(minutes, name, cfg.run_dir / 'adapted.safetensors',
                     lambda: adapt(cfg, crops, progress=False))

    untracked = [UnlabelledCrop(c.path, c.camid) for c in tracks]
    rows = {'site A model on site A (source)': (source, site_a), 'direct transfer': (source, site_b),
            'adapted, crops only': (adapted('adapt-crops', source, untracked, use_tracks=False), site_b),
            'adapted, crops + tracks': (adapted('adapt-tracks', source, tracks), site_b),
            'supervised on B (ceiling)': (ceiling, site_b)}
    if a.pruned:
        def pruned(name: str, start: Path) -> Path:
            cfg = PruneConfig(weight_path=str(start), data_dir=str(site_a), name=name, output_dir=runs,
                              batch_size=64, iter_nums=2, finetune_nums=1, final_finetune=4, lr=3e-4,
                              seed=a.seed, **PRUNED)
            return timed(minutes, name, cfg.run_dir / 'pruned.safetensors', lambda: prune(cfg, progress=False))
        small = pruned('pruned', source)
        rows['head67+token40: direct transfer'] = (small, site_b)
        rows['head67+token40: prune on A, then adapt (crops + tracks)'] = (adapted('pruned-adapt', small, tracks),
                                                                           site_b)
        rows[TAUGHT] = (adapted('pruned-adapt-taught', small, tracks, teacher=rows['adapted, crops + tracks'][0]),
                        site_b)
        rows['head67+token40: adapt, then prune on A'] = (pruned('adapt-pruned', rows['adapted, crops + tracks'][0]),
                                                         site_b)
    table = {name: score(path, data) for name, (path, data) in rows.items()}
    direct, ceil = table['direct transfer']['mAP'], table['supervised on B (ceiling)']['mAP']
    gap = ceil - direct
    print(f'\nCPU: {cpu_description()}; {(time.perf_counter() - t_start) / 60:.1f} min in this run')
    print('\n| model | site B mAP | site B Rank-1 | share of the gap recovered |\n|---|---|---|---|')
    for name, r in table.items():
        share = '' if 'source' in name or gap <= 0 else f'{100 * (r["mAP"] - direct) / gap:.0f}%'
        print(f'| {name} | {r["mAP"]:.2f} | {r["rank1"]:.2f} | {share} |')
    print(f'\nminutes per stage (this run; cached stages absent): {json.dumps(minutes)}')
    verdicts = {'crops + tracks recovers >= 60% of the gap':
                gap > 0 and table['adapted, crops + tracks']['mAP'] - direct >= 0.6 * gap,
                'crops only recovers >= 40% of the gap': gap > 0 and table['adapted, crops only']['mAP'] - direct >= 0.4 * gap}
    if a.pruned:
        best = table['adapted, crops + tracks']['mAP']
        for name in ('head67+token40: prune on A, then adapt (crops + tracks)', TAUGHT,
                     'head67+token40: adapt, then prune on A'):
            verdicts[f'{name} within 1 mAP of the adapted unpruned'] = table[name]['mAP'] >= best - 1
    for k, ok in verdicts.items():
        print(f'{"PASS" if ok else "FAIL"}: {k}')
    (work / 'adapt-table.json').write_text(json.dumps(dict(table=table, minutes=minutes, verdicts=verdicts), indent=2))


if __name__ == '__main__':
    main()
