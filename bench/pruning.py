"""Pruning benchmark: accuracy, counted FLOPs and measured CPU speed of AMG-pruned LA-Tiny, side by side.

Stages (each cached in --workdir, so a rerun only measures):
  1. a synthetic occluded dataset (reid.synthetic), with the histogram baseline and how much of each figure the
     occluders hide, 2. LA-Tiny trained from scratch with the strong recipe (and with the LA recipe, for its row),
  3. the pruned configs and the control (``unpruned+ft``: the same fine-tuning and distillation, nothing pruned),
  4. one table: seed-convention FLOPs, MSA params, real MACs, standard-protocol Rank-1/mAP (legacy protocol beside
  it) and CPU images/s at batch 1 and 32 (one process, interleaved, median), with the targets' verdicts; 5. the
  seed's six table configs at full size. Training, pruning and evaluation may run on a GPU (--device cuda); speed
  is always measured on the CPU.

    python -m bench.pruning --preset cpu --workdir bench-cpu    # LA-Tiny 128x64, the whole run on 2 CPU cores
    python -m bench.pruning --preset gpu --device cuda ...      # 224x224 (bench/run_on_gpu.sh)
"""
import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict

import torch

from bench.synthetic_quality import histogram_baseline
from models.speed import cpu_description, embed_fn, interleaved_throughput
from models.checkpoints import load_model
from models.complexity import complexity_report, msa_params, seed_flops
from models.la_transformer import create_model, model_from_architecture
from pruning.heads import head_prune_count
from pruning.schedule import PruneConfig, PrunePlan, RoundTarget, prune, prune_model
from pruning.tokens import token_prune_count
from reid.datasets import load_dataset
from reid.engine import TrainConfig, evaluate_model, train
from reid.synthetic import SynthConfig, generate_dataset
from reid.visualize import save_scatter

_logger = logging.getLogger('bench.pruning')

PRESETS = {
    # calibrated so that the unpruned LA-Tiny (strong recipe) lands in the 50-85 mAP band on 2 CPU cores
    'cpu': dict(img_size=[128, 64], ids=200, imgs_per_id=20, difficulty=0.05, occlusion=[0.15, 0.30],
                occluded_train=0.5, epochs=40, batch_size=64, lr=5e-4, iter_nums=4, finetune_nums=1,
                final_finetune=8, prune_lr=3e-4, configs='unpruned+ft,token40,head67,head67+token40,head50+drop50',
                recipes='strong,la'),
    'gpu': dict(img_size=[224, 224], ids=200, imgs_per_id=20, difficulty=0.05, occlusion=[0.15, 0.30],
                occluded_train=0.5, epochs=40, batch_size=64, lr=5e-4, iter_nums=4, finetune_nums=1,
                final_finetune=8, prune_lr=3e-4, configs='unpruned+ft,token40,head67,head67+token40,head50+drop50',
                recipes='strong,la'),
}
CONFIGS = {
    # control: nothing pruned, the same rounds of fine-tuning with distillation (separates training time from pruning)
    'unpruned+ft': dict(prune_mode='attn', prune_rate=0.0),
    'token40': dict(prune_mode='attn', prune_rate=0.4),
    'head67': dict(prune_mode='head_entropy', prune_rate=0.67),
    'head67+token40': dict(prune_mode='head_attn', head_rate=0.67, token_rate=0.4),
    # beyond the paper: tokens leave the sequence before blocks 3, 6 and 9 (half of the survivors each time)
    'drop50': dict(prune_mode='attn', prune_rate=0.5, token_mode='drop', drop_blocks=(3, 6, 9)),
    'head50+drop50': dict(prune_mode='head_attn', head_rate=0.5, token_rate=0.5, token_mode='drop',
                          drop_blocks=(3, 6, 9)),
}
CONTROLS = ('unpruned', 'unpruned+ft')



def stage_data(work: Path, a) -> Path:
    root = work / 'data'
    if not (root / 'synth.json').exists():
        generate_dataset(root, SynthConfig(num_ids=a.ids, num_cams=6, imgs_per_id=a.imgs_per_id, occluded=True,
                                           occlusion=tuple(a.occlusion), occluded_train=a.occluded_train,
                                           difficulty=a.difficulty, seed=a.seed))
    return root


def teacher_path(work: Path, recipe: str) -> Path:
    return work / 'runs' / ('unpruned' if recipe == 'strong' else f'unpruned-{recipe}') / 'best.safetensors'


def stage_train(work: Path, data: Path, a) -> Dict[str, Path]:
    """LA-Tiny from scratch with each recipe (the strong one is the teacher of every pruned config)."""
    out = {}
    for recipe in a.recipes.split(','):
        best = teacher_path(work, recipe)
        if not best.exists():
            train(TrainConfig(data_dir=str(data), name=best.parent.name, output_dir=str(work / 'runs'),
                              img_size=tuple(a.img_size), epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                              recipe=recipe, seed=a.seed, device=a.device, num_workers=a.workers,
                              visibility=a.visibility if recipe == 'strong' else None))
        out['unpruned' if recipe == 'strong' else f'unpruned ({recipe} recipe)'] = best
    return out


def stage_prune(work: Path, data: Path, teacher: Path, a) -> Dict[str, Path]:
    paths = {}
    for name in a.configs.split(','):
        out = work / 'runs' / name / 'pruned.safetensors'
        if not out.exists():
            prune(PruneConfig(weight_path=str(teacher), data_dir=str(data), name=name, output_dir=str(work / 'runs'),
                              batch_size=a.batch_size, iter_nums=a.iter_nums, finetune_nums=a.finetune_nums,
                              final_finetune=a.final_finetune, lr=a.prune_lr, distill_type='soft',
                              distill_alpha=0.2, distill_tau=1.0, seed=a.seed, device=a.device,
                              num_workers=a.workers, visibility=a.visibility, **CONFIGS[name]))
        paths[name] = out
    return paths


def stage_evaluate(paths: Dict[str, Path], data: Path, work: Path, a) -> Dict[str, Dict]:
    """Standard (and legacy) protocol accuracy of every config, saved to accuracy.json (device: --device); the
    histogram baseline and the occluders' coverage go to data_quality.json."""
    ds = load_dataset(data)
    accuracy = {}
    for name, p in paths.items():
        model = load_model(p, device=a.device)
        r = evaluate_model(model, ds.query, ds.gallery, batch_size=128, device=torch.device(a.device),
                           num_workers=a.workers, progress=False)
        accuracy[name] = dict(rank1=r['standard']['rank1'], mAP=r['standard']['mAP'],
                              legacy_rank1=r['legacy']['rank1'], legacy_mAP=r['legacy']['mAP'],
                              architecture=model.architecture())
        if model.has_visibility:  # the score the service answers with
            accuracy[name]['vis_mAP'] = evaluate_model(model, ds.query, ds.gallery, batch_size=128,
                                                       device=torch.device(a.device), num_workers=a.workers,
                                                       progress=False, protocols=('standard',),
                                                       visibility=True)['standard']['mAP']
    (work / 'accuracy.json').write_text(json.dumps(accuracy, indent=2))
    quality = dict(histogram=histogram_baseline(data),
                   occluded_share_of_figure=json.loads((data / 'synth.json').read_text())['occluded_share_of_figure'])
    (work / 'data_quality.json').write_text(json.dumps(quality, indent=2))
    return accuracy


def stage_speed(accuracy: Dict[str, Dict], a) -> Dict[str, Dict]:
    """Complexity and CPU images/s at batch 1 and 32, all configs in one process, interleaved (median).

    Speed depends on the architecture only, so models are rebuilt from the records in accuracy.json (the weights
    may stay on the machine that trained them)."""
    torch.set_num_threads(a.threads)
    models = {name: model_from_architecture(r['architecture']).eval() for name, r in accuracy.items()
              if 'recipe' not in name}  # the other recipe's model has the unpruned architecture
    rows = {name: dict(complexity_report(m)) for name, m in models.items()}
    for batch in (1, 32):
        speed = interleaved_throughput({n: embed_fn(m, batch) for n, m in models.items()}, batch,
                                       repeats=a.repeats)
        for name, ips in speed.items():
            rows[name][f'ips_b{batch}'] = ips
    return rows


def seed_table() -> Dict[str, Dict[str, float]]:
    """The seed's six configs at full size, pruned to the same counts in one round after scoring random data."""
    torch.manual_seed(0)
    specs = {'LA-Base token40': ('amg_vit_base_patch16_224', 0.0, 0.40),
             'LA-Base head40': ('amg_vit_base_patch16_224', 0.40, 0.0),
             'LA-Base head25+token25': ('amg_vit_base_patch16_224', 0.25, 0.25),
             'LA-Tiny token40': ('amg_vit_tiny_patch16_224', 0.0, 0.40),
             'LA-Tiny head67': ('amg_vit_tiny_patch16_224', 0.67, 0.0),
             'LA-Tiny head15+token25': ('amg_vit_tiny_patch16_224', 0.15, 0.25)}
    out = {}
    for label, (name, head_rate, token_rate) in specs.items():
        model = create_model(name, num_classes=10)
        batch = [(torch.randn(2, 3, 224, 224), torch.randint(0, 10, (2,)), None)]
        target = RoundTarget(heads=head_prune_count(model.heads_per_block(), head_rate),
                             tokens=token_prune_count(model.num_tokens - 1, len(model.blocks), token_rate))
        prune_model(model, None, batch, batch, PrunePlan(rounds=[target]), progress=False)
        out[label] = dict(heads=sum(model.heads_per_block()), msa_params_m=msa_params(model) / 1e6,
                          seed_gflops=seed_flops(model) / 1e9)
    return out


def print_table(rows: Dict[str, Dict], quality: Dict, a, minutes: float) -> Dict[str, bool]:
    base = rows['unpruned']
    control = rows.get('unpruned+ft', base)
    print(f"\nLA-Tiny {a.img_size[0]}x{a.img_size[1]} on synthetic occluded data ({a.ids} identities, difficulty "
          f"{a.difficulty}); CPU: {cpu_description()}")
    print('| config | heads | seed GFLOPs | MSA params (M) | real GMACs | img/s b1 | img/s b32 | speed/FLOPs ratio b1 '
          '| b32 | Rank-1 | mAP | mAP, visibility-weighted | legacy Rank-1 | legacy mAP |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    verdict_speed = True
    for name, r in rows.items():
        vis = f"{r['vis_mAP']:.2f}" if 'vis_mAP' in r else '-'
        accuracy = f"{r['rank1']:.2f} | {r['mAP']:.2f} | {vis} | {r['legacy_rank1']:.2f} | {r['legacy_mAP']:.2f}"
        if 'ips_b1' not in r:  # another recipe's unpruned model: the unpruned architecture
            print(f"| {name} | {base['heads']} | (as unpruned) | | | | | | | {accuracy} |")
            continue
        flops_ratio = base['real_gmacs'] / r['real_gmacs']
        ratios = [(r[f'ips_b{b}'] / base[f'ips_b{b}']) / flops_ratio for b in (1, 32)]
        if name not in CONTROLS and 'drop' not in name:  # the paper's modes; token dropping has its own target
            verdict_speed &= all(x >= 0.9 for x in ratios)
        print(f"| {name} | {r['heads']} | {r['seed_gflops']:.3f} | {r['msa_params_m']:.3f} | {r['real_gmacs']:.3f} | "
              f"{r['ips_b1']:.1f} | {r['ips_b32']:.1f} | {ratios[0]:.2f} | {ratios[1]:.2f} | {accuracy} |")
    hist = quality['histogram']
    print(f"| colour histogram (no learning) | | | | | | | | | {hist['rank1']:.2f} | {hist['mAP']:.2f} | | | |")
    print('\nShare of the figure hidden by the occluder (occluded images, per split): ' + '; '.join(
        f"{split} n={q['images']} min {q['min']:.2f} p10 {q['p10']:.2f} median {q['median']:.2f} "
        f"p90 {q['p90']:.2f} max {q['max']:.2f}" for split, q in quality['occluded_share_of_figure'].items()))
    verdicts = {}

    def verdict(key: str, ok: bool, text: str) -> None:
        verdicts[key] = ok
        print(f"target: {text}: {'PASS' if ok else 'FAIL'}")

    print()
    verdict('band', 50 <= base['mAP'] <= 85, f"unpruned (strong recipe) mAP in 50-85 ({base['mAP']:.2f})")
    verdict('histogram', base['mAP'] - hist['mAP'] >= 15,
            f"colour histogram >= 15 mAP points below ({base['mAP'] - hist['mAP']:.2f} below)")
    queries = quality['occluded_share_of_figure'].get('query', {})
    verdict('occlusion', bool(queries) and queries['images'] == a.query_count and queries['min'] >= 0.15
            and queries['max'] <= 0.55, f"every query occluded, 15-55% of its figure hidden "
                                        f"({queries.get('images', 0)}/{a.query_count} occluded, "
                                        f"{queries.get('min', 0):.2f}-{queries.get('max', 0):.2f})")
    verdict('speed', verdict_speed, 'measured speed-up >= 90% of the real-FLOPs ratio, every paper config, b1 and b32')
    if 'head67+token40' in rows:
        loss = control['mAP'] - rows['head67+token40']['mAP']
        verdict('mAP', loss <= 1.0, f"head67+token40 loses <= 1.0 mAP point against unpruned+ft (loses {loss:.2f}; "
                                    f"against unpruned without the extra fine-tuning: "
                                    f"{base['mAP'] - rows['head67+token40']['mAP']:.2f})")
        if 'vis_mAP' in rows['head67+token40'] and 'vis_mAP' in control:
            loss = control['vis_mAP'] - rows['head67+token40']['vis_mAP']
            verdict('vis_mAP', loss <= 1.0, f"visibility-weighted: head67+token40 loses <= 1.0 mAP point against "
                                            f"unpruned+ft (loses {loss:.2f})")
        for name in ('unpruned', 'head67+token40'):
            if 'vis_mAP' in rows.get(name, {}):
                gain = rows[name]['vis_mAP'] - rows[name]['mAP']
                verdict(f'vis_gain_{name}', gain >= 3, f"{name}: visibility-weighted >= plain + 3 mAP ({gain:+.2f})")
    for name in (n for n in rows if 'drop' in n):
        r = rows[name]
        speedups = [r[f'ips_b{b}'] / base[f'ips_b{b}'] for b in (1, 32)]
        loss = control['mAP'] - r['mAP']
        verdict(name, all(x >= 2 for x in speedups) and loss <= 1.5,
                f"{name} >= 2x images/s of unpruned (b1 {speedups[0]:.2f}x, b32 {speedups[1]:.2f}x) at <= 1.5 mAP "
                f"loss against unpruned+ft (loses {loss:.2f})")
    print(f"run time of the stages run now: {minutes:.1f} min")
    return verdicts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', choices=list(PRESETS), default='cpu', help='sizes and schedule (flags override)')
    p.add_argument('--workdir', type=Path, default=Path('bench-work'))
    p.add_argument('--img-size', nargs=2, type=int)
    p.add_argument('--ids', type=int)
    p.add_argument('--imgs-per-id', type=int)
    p.add_argument('--difficulty', type=float)
    p.add_argument('--occlusion', nargs=2, type=float, metavar=('MIN', 'MAX'),
                   help='share of the figure an occluder hides (calibrates the unpruned model\'s mAP)')
    p.add_argument('--occluded-train', type=float, help='share of training images occluded')
    p.add_argument('--epochs', type=int)
    p.add_argument('--batch-size', type=int)
    p.add_argument('--lr', type=float)
    p.add_argument('--recipes', help='comma list of training recipes; the first trains the teacher (strong, la)')
    p.add_argument('--iter-nums', type=int)
    p.add_argument('--finetune-nums', type=int)
    p.add_argument('--final-finetune', type=int)
    p.add_argument('--prune-lr', type=float, help='fine-tuning learning rate (the seed: 1e-4)')
    p.add_argument('--device', default='cpu', help='for training and fine-tuning; speed is always measured on CPU')
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--configs', help=f'comma list of: {", ".join(CONFIGS)}')
    p.add_argument('--visibility', type=float, help='weight of the visibility loss of the strong recipe\'s teacher '
                   'and of every pruning run (default: the recipe\'s, 1; 0: no visibility head)')
    p.add_argument('--stages', default='data,train,prune,evaluate,speed,seed',
                   help='comma list; e.g. "data,train,prune,evaluate" on a GPU box, then "speed,seed" on the CPU')
    a = p.parse_args()
    for key, value in PRESETS[a.preset].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    stages = set(a.stages.split(','))
    a.workdir.mkdir(parents=True, exist_ok=True)
    data = stage_data(a.workdir, a) if 'data' in stages else a.workdir / 'data'
    a.query_count = len(load_dataset(data).query)
    teachers = stage_train(a.workdir, data, a) if 'train' in stages else {
        'unpruned': teacher_path(a.workdir, 'strong')}
    teacher = teachers['unpruned']
    paths = stage_prune(a.workdir, data, teacher, a) if 'prune' in stages else {
        n: a.workdir / 'runs' / n / 'pruned.safetensors' for n in a.configs.split(',')}
    paths = {**teachers, **paths}
    if 'evaluate' in stages:
        stage_evaluate(paths, data, a.workdir, a)
    if 'speed' in stages:
        accuracy = json.loads((a.workdir / 'accuracy.json').read_text())
        quality = json.loads((a.workdir / 'data_quality.json').read_text())
        rows = stage_speed(accuracy, a)
        for name in accuracy:
            rows.setdefault(name, {}).update({k: v for k, v in accuracy[name].items() if k != 'architecture'})
        order = ['unpruned', *(n for n in rows if 'recipe' in n), *(n for n in rows if n != 'unpruned' and
                                                                     'recipe' not in n)]
        rows = {n: rows[n] for n in order}
        verdicts = print_table(rows, quality, a, (time.perf_counter() - started) / 60)
        (a.workdir / 'results.json').write_text(json.dumps(dict(rows=rows, verdicts=verdicts, quality=quality,
                                                                cpu=cpu_description()), indent=2))
        sized = {n: r for n, r in rows.items() if 'real_gmacs' in r}
        save_scatter({n: (r['real_gmacs'], r['mAP']) for n, r in sized.items()}, a.workdir / 'map_vs_flops.png',
                     'real GMACs', 'mAP %', 'accuracy vs FLOPs (standard protocol)')
        save_scatter({n: (r['ips_b32'], r['mAP']) for n, r in sized.items()}, a.workdir / 'map_vs_speed.png',
                     'CPU images/s, batch 32', 'mAP %', 'accuracy vs speed')
        print(f"plots: {a.workdir / 'map_vs_flops.png'}, {a.workdir / 'map_vs_speed.png'}")
    if 'seed' in stages:
        print('\nThe seed\'s table configs at full size (224x224), pruned after scoring random data:')
        print('| config | heads | MSA params (M) | seed-convention GFLOPs |')
        print('|---|---|---|---|')
        for label, r in seed_table().items():
            print(f"| {label} | {r['heads']} | {r['msa_params_m']:.3f} | {r['seed_gflops']:.3f} |")


if __name__ == '__main__':
    main()
