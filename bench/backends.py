"""Embedding backends side by side: eager PyTorch, ONNX Runtime fp32 and INT8, OpenVINO fp32 and bf16 (bf16 where
the CPU runs it natively; skipped without the openvino package), unpruned and pruned LA-Tiny (224x224, CPU), with the
CPU's instruction sets in the table. For OpenVINO also: does pruning keep paying there (pruned/unpruned speed ratio
against the real-FLOPs ratio, target >= 90%)?

Pruned architectures are made the way the seed's table is (scores from random data): head 67% + key/value tokens
40%, and token dropping (half of the survivors before blocks 3, 6, 9) with head 50%. fp32 outputs are checked equal
(max abs difference) before anything is timed; all runs are interleaved in one process (median of repeats). INT8
models are calibrated on a small synthetic dataset for timing; ``--accuracy-workdir`` (a ``bench.pruning`` work
folder) also measures what INT8 costs in accuracy on the occluded benchmark's trained models: mean cosine to the
fp32 embedding and mAP (standard protocol), target within 0.5 points.

    python -m bench.backends [--accuracy-workdir bench-cpu]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from models.complexity import real_macs
from models.openvino_backend import cpu_precision, openvino_available
from models.speed import cpu_description, interleaved_throughput
from models.checkpoints import load_model, save_checkpoint
from models.embedder import Embedder
from models.export import export_onnx, file_sha256
from models.la_transformer import create_model
from pruning.heads import apply_heads, head_prune_count, select_heads
from pruning.scoring import score_model
from pruning.tokens import apply_kv_tokens, select_dropped_tokens, select_kv_tokens, token_prune_count
from reid.datasets import load_dataset
from reid.engine import ce_step, extract_features
from reid.export import export_int8_calibrated, nncf_available
from reid.metrics import compute_distance_matrix, evaluate_rank
from reid.synthetic import SynthConfig, generate_dataset


def pruned_models(img_size=(224, 224), num_classes: int = 10):
    """{'unpruned', 'head67+token40', 'head50+drop50': LA-Tiny}, pruned after scoring random data (speed only)."""
    torch.manual_seed(0)
    models = {'unpruned': create_model('amg_vit_tiny_patch16_224', img_size=tuple(img_size), num_classes=num_classes)}
    x, y = torch.randn(2, 3, *img_size), torch.randint(0, num_classes, (2,))
    for name, head_rate, token_rate, drop in (('head67+token40', 0.67, 0.4, False), ('head50+drop50', 0.5, 0.5, True)):
        model = create_model('amg_vit_tiny_patch16_224', img_size=tuple(img_size), num_classes=num_classes)
        scores = score_model(model, [(x, y, None)], torch.device('cpu'), ce_step, progress=False)
        if drop:
            model.set_token_keep(select_dropped_tokens(scores.token, model.sequence_positions(), (3, 6, 9), 0.5))
        else:
            n = token_prune_count(model.num_tokens - 1, len(model.blocks), token_rate)
            apply_kv_tokens(model, select_kv_tokens(scores.token, model.kv_index_per_block(), n))
        apply_heads(model, select_heads(scores.entropy, head_prune_count(model.heads_per_block(), head_rate)))
        models[name] = model
    return models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--accuracy-workdir', type=Path, help='a bench.pruning work folder: INT8 accuracy of its models')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix='amg-backends-'))
    generate_dataset(work / 'calibration', SynthConfig(num_ids=10, num_cams=2, imgs_per_id=4, seed=0), progress=False)
    calibration = load_dataset(work / 'calibration').train
    embedders, torch_bf16 = {}, {}
    openvino = openvino_available()
    precisions = (['fp32'] + (['bf16'] if cpu_precision() == 'bf16' else [])
                  + (['int8'] if nncf_available() else [])) if openvino else []
    macs = {}
    for name, model in pruned_models().items():
        macs[name] = real_macs(model)
        ckpt = save_checkpoint(model, work / f'{name}.safetensors')
        export_onnx(model.eval(), ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
        export_int8_calibrated(ckpt, calibration, count=32)
        embedders[f'eager {name}'] = Embedder(ckpt, backend='torch')
        embedders[f'ORT {name}'] = Embedder(ckpt, backend='onnx', threads=a.threads)
        embedders[f'INT8 {name}'] = Embedder(ckpt, backend='onnx-int8', threads=a.threads)
        assert embedders[f'ORT {name}'].backend == 'onnx' and embedders[f'INT8 {name}'].backend == 'onnx-int8'
        for precision in precisions:  # int8: NNCF's model (export_int8_calibrated wrote it), fp32 elsewhere
            embedders[f'OV-{precision} {name}'] = Embedder(
                ckpt, backend='openvino-int8' if precision == 'int8' else 'openvino', threads=a.threads,
                ov_precision='auto' if precision == 'int8' else precision)
            assert embedders[f'OV-{precision} {name}'].precision == precision
        torch_bf16[name] = embedders[f'eager {name}'].model
    results = {}
    for batch in (1, 32):
        x = torch.randn(batch, 3, 224, 224)
        for name in [n for n in embedders if n.startswith(('ORT', 'OV-fp32'))]:  # INT8, bf16 differ by design
            eager = embedders['eager ' + name.split(' ', 1)[1]].embed_tensor(x).numpy()
            diff = np.abs(embedders[name].embed_tensor(x).numpy() - eager).max()
            assert diff < 1e-4, (name, diff)
        for name in [n for n in embedders if n.startswith('OV-bf16')]:
            eager = embedders['eager ' + name.split(' ', 1)[1]].embed_tensor(x).numpy()
            got = embedders[name].embed_tensor(x).numpy()
            cosine = (got * eager).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(eager, axis=1)
            assert cosine.min() >= 0.999, (name, cosine.min())
        fns = {n: (lambda e=e, x=x: e.embed_tensor(x)) for n, e in embedders.items()}
        for name, model in torch_bf16.items():  # torch's own bf16 (oneDNN: AMX or AVX-512 BF16 where present)
            fns[f'torch-bf16 {name}'] = lambda m=model, x=x: _autocast_embed(m, x)
        results[batch] = interleaved_throughput(fns, batch, repeats=a.repeats)
    base = {b: results[b]['eager unpruned'] for b in results}
    print(f'CPU: {cpu_description()}')
    print(f'LA-Tiny 224x224, {a.threads} CPU threads, images/s (median of {a.repeats}); fp32 outputs equal to < 1e-4')
    print('| model | batch | eager | ORT fp32 | ORT INT8 | ORT/eager | INT8/eager | INT8/ORT | ORT vs eager unpruned | '
          'INT8 vs eager unpruned |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    verdict_ort, verdict_total, verdict_int8 = True, True, True
    for name in ('unpruned', 'head67+token40', 'head50+drop50'):
        for b in (1, 32):
            e, o, q = (results[b][f'{kind} {name}'] for kind in ('eager', 'ORT', 'INT8'))
            verdict_ort &= o / e >= 1.7
            if name == 'head67+token40':
                verdict_total &= o / base[b] >= 2.4
                verdict_int8 &= q / base[b] >= 4.0
            print(f'| {name} | {b} | {e:.1f} | {o:.1f} | {q:.1f} | {o / e:.2f} | {q / e:.2f} | {q / o:.2f} | '
                  f'{o / base[b]:.2f} | {q / base[b]:.2f} |')
    print(f"\ntarget: ORT >= 1.7x eager for every model, b1 and b32: {'PASS' if verdict_ort else 'FAIL'}")
    print(f"target: ORT head67+token40 >= 2.4x eager unpruned, b1 and b32: {'PASS' if verdict_total else 'FAIL'}")
    print(f"target: ORT INT8 head67+token40 >= 4x eager unpruned, b1 and b32: {'PASS' if verdict_int8 else 'FAIL'}")
    print('\ntorch bf16 (torch.autocast on the CPU), images/s and vs eager unpruned fp32:')
    print('| model | batch | torch bf16 | vs eager unpruned | vs eager fp32 of the same model |')
    print('|---|---|---|---|---|')
    for name in torch_bf16:
        for b in (1, 32):
            v = results[b][f'torch-bf16 {name}']
            print(f"| {name} | {b} | {v:.1f} | {v / base[b]:.2f} | {v / results[b][f'eager {name}']:.2f} |")
    if precisions:
        print_openvino(results, base, precisions, macs)
    if a.accuracy_workdir:
        print_int8_accuracy(a.accuracy_workdir, work)


def print_openvino(results, base, precisions, macs) -> None:
    print(f'\nOpenVINO (CPU plugin, LATENCY hint), images/s; this CPU runs {cpu_precision()} natively')
    print('| model | batch | ' + ' | '.join(f'OV {p}' for p in precisions) + ' | ' +
          ' | '.join(f'OV {p} vs eager unpruned' for p in precisions) + ' | ' +
          ' | '.join(f'OV {p}: speed ratio / FLOPs ratio' for p in precisions) + ' |')
    print('|---|---|' + '---|' * (3 * len(precisions)))
    fastest, pays = True, True
    for name in ('unpruned', 'head67+token40', 'head50+drop50'):
        for b in (1, 32):
            speeds = [results[b][f'OV-{p} {name}'] for p in precisions]
            flops_ratio = macs['unpruned'] / macs[name]
            kept = [(results[b][f'OV-{p} {name}'] / results[b][f'OV-{p} unpruned']) / flops_ratio for p in precisions]
            if name != 'unpruned':
                pays &= min(kept) >= 0.9
            if name == 'head67+token40':
                fastest &= max(speeds) / base[b] >= 4.0
            print(f'| {name} | {b} | ' + ' | '.join(f'{v:.1f}' for v in speeds) + ' | ' +
                  ' | '.join(f'{v / base[b]:.2f}' for v in speeds) + ' | ' + ' | '.join(f'{k:.2f}' for k in kept) + ' |')
    print(f"target: head67+token40 on OpenVINO >= 4x eager unpruned fp32, b1 and b32: {'PASS' if fastest else 'FAIL'}")
    print(f"target: pruned/unpruned speed ratio >= 90% of the real-FLOPs ratio on OpenVINO: {'PASS' if pays else 'FAIL'}")


def _autocast_embed(model, x):
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        return model.embed(x)


def _map(embedder: Embedder, ds) -> tuple:
    """(query features, standard-protocol mAP) of ``embedder`` on ``ds``."""
    qf, q_pids, q_camids = extract_features(embedder, ds.query, progress=False)
    gf, g_pids, g_camids = extract_features(embedder, ds.gallery, progress=False)
    return qf, evaluate_rank(compute_distance_matrix(qf, gf), q_pids, g_pids, q_camids, g_camids,
                             protocol='standard')['mAP']


def print_int8_accuracy(bench_workdir: Path, work: Path) -> None:
    """INT8 vs fp32 on the occluded benchmark's trained models (calibrated on 300 of its training images)."""
    import shutil
    ds = load_dataset(bench_workdir / 'data')
    print(f'\nINT8 accuracy on {bench_workdir} (standard protocol, {len(ds.query)} occluded queries):')
    others = [('onnx-int8', 'auto', 'ORT INT8')]
    if openvino_available():
        others.append(('openvino', 'bf16', 'OV bf16') if cpu_precision() == 'bf16' else ('openvino', 'fp32', 'OV fp32'))
        if nncf_available():
            others.append(('openvino-int8', 'auto', 'OV INT8 (NNCF)'))
    print('| model | fp32 mAP (eager) | backend | its mAP | minus fp32 | mean cosine to fp32 (queries) |')
    print('|---|---|---|---|---|---|')
    ok = True
    for name, file in (('unpruned', 'best.safetensors'), ('head67+token40', 'pruned.safetensors'),
                       ('head50+drop50', 'pruned.safetensors')):
        source = bench_workdir / 'runs' / name / file
        if not source.exists():
            continue
        ckpt = Path(shutil.copy(source, work / f'accuracy-{name}.safetensors'))
        export_onnx(load_model(ckpt), ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
        export_int8_calibrated(ckpt, ds.train)
        f32, m32 = _map(Embedder(ckpt, backend='torch', batch_size=64), ds)
        for backend, precision, label in others:
            embedder = Embedder(ckpt, backend=backend, batch_size=64, ov_precision=precision)
            assert embedder.backend == backend, (backend, embedder.backend)
            f, m = _map(embedder, ds)
            cos = float(((f * f32).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(f32, axis=1)).mean())
            ok &= abs(m - m32) <= 0.5
            print(f'| {name} | {m32:.2f} | {label} | {m:.2f} | {m - m32:+.2f} | {cos:.4f} |')
    print(f"target: INT8 and bf16 mAP within 0.5 points of fp32: {'PASS' if ok else 'FAIL'}")

if __name__ == '__main__':
    main()
