"""Embedding backends side by side: eager PyTorch vs ONNX Runtime, unpruned and pruned LA-Tiny (224x224, CPU).

Pruned architectures are made the way the seed's table is (scores from random data): head 67% + key/value tokens
40%, and token dropping (half of the survivors before blocks 3, 6, 9) with head 50%. Outputs are checked equal
(max abs difference) before anything is timed; all eight runs are interleaved in one process (median of repeats).

    python -m bench.backends
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from models.speed import interleaved_throughput
from models.checkpoints import save_checkpoint
from models.embedder import Embedder
from models.export import export_onnx, file_sha256
from models.la_transformer import create_model
from pruning.heads import apply_heads, head_prune_count, select_heads
from pruning.scoring import score_model
from pruning.tokens import apply_kv_tokens, select_dropped_tokens, select_kv_tokens, token_prune_count
from reid.engine import ce_step


def pruned_models():
    torch.manual_seed(0)
    models = {'unpruned': create_model('amg_vit_tiny_patch16_224', num_classes=10)}
    x, y = torch.randn(2, 3, 224, 224), torch.randint(0, 10, (2,))
    for name, head_rate, token_rate, drop in (('head67+token40', 0.67, 0.4, False), ('head50+drop50', 0.5, 0.5, True)):
        model = create_model('amg_vit_tiny_patch16_224', num_classes=10)
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
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix='amg-backends-'))
    embedders = {}
    for name, model in pruned_models().items():
        ckpt = save_checkpoint(model, work / f'{name}.safetensors')
        export_onnx(model.eval(), ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
        embedders[f'eager {name}'] = Embedder(ckpt, backend='torch')
        embedders[f'ORT {name}'] = Embedder(ckpt, backend='onnx', threads=a.threads)
        assert embedders[f'ORT {name}'].backend == 'onnx'
    results = {}
    for batch in (1, 32):
        x = torch.randn(batch, 3, 224, 224)
        for name in [n for n in embedders if n.startswith('ORT')]:
            diff = np.abs(embedders[name].embed_tensor(x).numpy() -
                          embedders[name.replace('ORT', 'eager')].embed_tensor(x).numpy()).max()
            assert diff < 1e-4, (name, diff)
        fns = {n: (lambda e=e, x=x: e.embed_tensor(x)) for n, e in embedders.items()}
        results[batch] = interleaved_throughput(fns, batch, repeats=a.repeats)
    base = {b: results[b]['eager unpruned'] for b in results}
    print(f'LA-Tiny 224x224, {a.threads} CPU threads, images/s (median of {a.repeats}); outputs equal to < 1e-4')
    print('| model | eager b1 | ORT b1 | ORT/eager b1 | eager b32 | ORT b32 | ORT/eager b32 | ORT vs eager unpruned b1 | b32 |')
    print('|---|---|---|---|---|---|---|---|---|')
    verdict_ort, verdict_total = True, True
    for name in ('unpruned', 'head67+token40', 'head50+drop50'):
        e1, o1 = results[1][f'eager {name}'], results[1][f'ORT {name}']
        e32, o32 = results[32][f'eager {name}'], results[32][f'ORT {name}']
        verdict_ort &= o1 / e1 >= 1.7 and o32 / e32 >= 1.7
        if name == 'head67+token40':
            verdict_total = o1 / base[1] >= 2.4 and o32 / base[32] >= 2.4
        print(f'| {name} | {e1:.1f} | {o1:.1f} | {o1 / e1:.2f} | {e32:.1f} | {o32:.1f} | {o32 / e32:.2f} | '
              f'{o1 / base[1]:.2f} | {o32 / base[32]:.2f} |')
    print(f"\ntarget: ORT >= 1.7x eager for every model, b1 and b32: {'PASS' if verdict_ort else 'FAIL'}")
    print(f"target: ORT head67+token40 >= 2.4x eager unpruned, b1 and b32: {'PASS' if verdict_total else 'FAIL'}")


if __name__ == '__main__':
    main()
