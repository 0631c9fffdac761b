"""``amg-reid``: one command line over the library (each subcommand is a thin shell over one function).

The seed's flags are kept (``--name --model --batch-size --data-dir --weight-path --dataset``, and the pruning
flags with underscores), so its README commands translate one to one.
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ['main', 'build_parser']

_logger = logging.getLogger('amg_reid')


def _add_model_args(p: argparse.ArgumentParser, default_batch: int = 32) -> None:
    p.add_argument('--model', default='amg_vit_tiny_patch16_224', help='registry name (see `amg-reid models`)')
    p.add_argument('--weight-path', '--weight_path', dest='weight_path', help='checkpoint to start from / evaluate')
    p.add_argument('--data-dir', '--data_dir', dest='data_dir', help='dataset folder (Market-1501 or ImageFolder)')
    p.add_argument('--dataset', choices=['market', 'o-duke'], help='look for this dataset under --data-dir')
    p.add_argument('--batch-size', '--batch_size', dest='batch_size', type=int, default=default_batch)
    p.add_argument('--img-size', nargs=2, type=int, metavar=('H', 'W'), default=None,
                   help='input size (default: 224 224, or the checkpoint\'s)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--workers', type=int, default=0, help='data loader worker processes')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='amg-reid', description=__doc__.split('\n')[0])
    parser.add_argument('-v', '--verbose', action='store_true')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('synth', help='generate a synthetic Re-ID dataset in the Market-1501 layout')
    p.add_argument('out', type=Path)
    p.add_argument('--ids', type=int, default=100, help='identities (half train, half test)')
    p.add_argument('--cams', type=int, default=6)
    p.add_argument('--imgs-per-id', type=int, default=16)
    p.add_argument('--occluded', action='store_true', help='Occluded-Duke-like: every query occluded')
    p.add_argument('--occlusion', nargs=2, type=float, metavar=('MIN', 'MAX'), default=(0.2, 0.6),
                   help='share of the figure an occluder covers (with --occluded)')
    p.add_argument('--difficulty', type=float, default=0.5, help='0 (easy) .. 1 (hard)')
    p.add_argument('--junk', type=int, default=20)
    p.add_argument('--distractors', type=int, default=20)
    p.add_argument('--seed', type=int, default=0)

    p = sub.add_parser('prepare', help='convert datasets (Market-1501 -> ImageFolder, DukeMTMC -> Occluded-Duke)')
    p.add_argument('kind', choices=['market-imagefolder', 'occluded-duke'])
    p.add_argument('src', type=Path, help='Market-1501 folder, or DukeMTMC-reID.zip')
    p.add_argument('dst', type=Path)
    p.add_argument('--lists', type=Path, help='folder with train.list, gallery.list, query.list (occluded-duke)')

    p = sub.add_parser('train', help='train an LA-Transformer (blockwise fine-tuning recipe)')
    _add_model_args(p)
    p.add_argument('--name', default='LA-tiny', help='run name: outputs go to OUTPUT_DIR/NAME/')
    p.add_argument('--output-dir', default='runs')
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--lr', type=float, default=3e-4)
    p.add_argument('--wd', type=float, default=5e-4)
    p.add_argument('--lmbd', type=float, default=8.0)
    p.add_argument('--blockwise', action=argparse.BooleanOptionalAction, default=None,
                   help='blockwise unfreezing (default: on with --weight-path, off from scratch)')
    p.add_argument('--val-fraction', type=float, default=0.1, help='train identities held out for model selection')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--resume', action='store_true', help='continue from OUTPUT_DIR/NAME/last.safetensors')

    p = sub.add_parser('evaluate', help='Rank-k / mAP / mINP (standard protocol, and the seed\'s legacy one)')
    _add_model_args(p, default_batch=128)
    p.add_argument('--protocol', choices=['standard', 'legacy', 'both'], default='both')
    p.add_argument('--flip', action='store_true', help='average features of each image and its mirror')
    p.add_argument('--rerank', action='store_true', help='k-reciprocal re-ranking')
    p.add_argument('--json', type=Path, help='also write the results here')
    p.add_argument('--visualize', type=Path, metavar='DIR', help='write ranked-result PNGs and a CMC curve here')

    p = sub.add_parser('complexity', help='FLOPs (seed convention and real count) and MSA parameters')
    p.add_argument('--model', default='amg_vit_tiny_patch16_224')
    p.add_argument('--weight-path', '--weight_path', dest='weight_path')
    p.add_argument('--img-size', nargs=2, type=int, metavar=('H', 'W'))

    p = sub.add_parser('prune', help='AMG pruning (tokens, heads or both) with distillation fine-tuning')
    _add_model_args(p)
    p.add_argument('--name', default='pruned', help='run name: outputs go to OUTPUT_DIR/NAME/')
    p.add_argument('--output-dir', default='runs')
    p.add_argument('--prune_mode', '--prune-mode', dest='prune_mode', choices=['attn', 'head_entropy', 'head_attn'],
                   default='attn', help='attn: key/value tokens; head_entropy: heads; head_attn: both')
    p.add_argument('--prune_rate', '--prune-rate', dest='prune_rate', type=float, default=0.0,
                   help='fraction to remove (tokens for attn, heads for head_entropy)')
    p.add_argument('--head_rate', '--head-rate', dest='head_rate', type=float, default=0.0, help='head_attn only')
    p.add_argument('--token_rate', '--token-rate', dest='token_rate', type=float, default=0.0, help='head_attn only')
    p.add_argument('--iter_nums', '--iter-nums', dest='iter_nums', type=int, default=1, help='prune rounds')
    p.add_argument('--finetune_nums', '--finetune-nums', dest='finetune_nums', type=int, default=0,
                   help='fine-tune epochs after each round')
    p.add_argument('--final_finetune', '--final-finetune', dest='final_finetune', type=int, default=10)
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--wd', type=float, default=1e-3)
    p.add_argument('--distill-type', '--distill_type', dest='distill_type', choices=['none', 'soft', 'hard'],
                   default='soft')
    p.add_argument('--distill-alpha', '--distill_alpha', dest='distill_alpha', type=float, default=0.2)
    p.add_argument('--distill-tau', '--distill_tau', dest='distill_tau', type=float, default=1.0)
    p.add_argument('--token_mode', '--token-mode', dest='token_mode', choices=['kv', 'drop'], default='kv',
                   help='kv: prune keys/values only (the paper); drop: tokens leave the sequence from --drop_blocks')
    p.add_argument('--drop_blocks', '--drop-blocks', dest='drop_blocks', default='3,6,9',
                   help='blocks before which tokens are dropped (token_mode drop); each drop removes the token rate')
    p.add_argument('--fuse_token', '--fuse-token', dest='fuse_token', action='store_true',
                   help='merge dropped tokens into one extra token (token_mode drop)')
    p.add_argument('--score-batches', type=int, default=None, help='limit the scoring pass to this many batches')
    p.add_argument('--seed', type=int, default=0)

    p = sub.add_parser('export', help='write CHECKPOINT.onnx (embedding, dynamic batch) beside the checkpoint')
    p.add_argument('--weight-path', '--weight_path', dest='weight_path', required=True)
    p.add_argument('--model', default=None, help='only for foreign checkpoints')
    p.add_argument('--output', type=Path, help='default: the checkpoint path with .onnx')
    p.add_argument('--img-size', nargs=2, type=int, metavar=('H', 'W'))

    p = sub.add_parser('serve', help='run the REST service (settings from AMG_* environment variables / .env)')
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=8000)
    p.add_argument('--data-dir', dest='data_dir', type=Path, help='overrides AMG_DATA_DIR')
    p.add_argument('--weight-path', '--model-path', dest='weight_path', type=Path, help='overrides AMG_MODEL_PATH')

    p = sub.add_parser('index', help='bulk-load a dataset folder into the service gallery (server stopped)')
    p.add_argument('folder', type=Path, help='Market-1501 or ImageFolder layout')
    p.add_argument('--split', choices=['gallery', 'query', 'train', 'all'], default='gallery')
    p.add_argument('--data-dir', dest='data_dir', type=Path, help='overrides AMG_DATA_DIR')
    p.add_argument('--weight-path', '--model-path', dest='weight_path', type=Path, help='overrides AMG_MODEL_PATH')

    sub.add_parser('models', help='list model names')
    return parser


def _cmd_synth(a: argparse.Namespace) -> None:
    from reid.synthetic import SynthConfig, generate_dataset
    cfg = SynthConfig(num_ids=a.ids, num_cams=a.cams, imgs_per_id=a.imgs_per_id, occluded=a.occluded,
                      occlusion=tuple(a.occlusion), difficulty=a.difficulty, junk=a.junk,
                      distractors=a.distractors, seed=a.seed)
    counts = generate_dataset(a.out, cfg)
    print(json.dumps(counts))


def _cmd_prepare(a: argparse.Namespace) -> None:
    from reid.prepare import build_occluded_duke, market_to_imagefolder
    if a.kind == 'market-imagefolder':
        counts = market_to_imagefolder(a.src, a.dst)
    else:
        if a.lists is None:
            raise ValueError('occluded-duke needs --lists FOLDER with train.list, gallery.list and query.list')
        counts = build_occluded_duke(a.src, a.lists, a.dst)
    print(json.dumps(counts))


def _require_data_dir(a: argparse.Namespace) -> None:
    if not a.data_dir:
        raise ValueError('--data-dir is required')


def _cmd_train(a: argparse.Namespace) -> None:
    from reid.engine import TrainConfig, train
    _require_data_dir(a)
    cfg = TrainConfig(data_dir=a.data_dir, name=a.name, model=a.model, output_dir=a.output_dir, dataset=a.dataset,
                      weight_path=a.weight_path, img_size=tuple(a.img_size or (224, 224)), epochs=a.epochs,
                      batch_size=a.batch_size, lr=a.lr, weight_decay=a.wd, lmbd=a.lmbd, blockwise=a.blockwise,
                      val_fraction=a.val_fraction, num_workers=a.workers, seed=a.seed, resume=a.resume,
                      device=a.device)
    summary = train(cfg)
    if 'rank' in summary:  # a torchrun worker other than rank 0: rank 0 reports
        return
    last = summary['history'][-1] if summary['history'] else {}
    print(json.dumps(dict(best=summary['best'], last_epoch=last), indent=2))


def _load_for_eval(a: argparse.Namespace):
    from models.checkpoints import load_model
    from models.la_transformer import create_model
    if a.weight_path:
        return load_model(a.weight_path, a.model, img_size=a.img_size, device=a.device)
    _logger.warning('no --weight-path: using an untrained %s', a.model)
    return create_model(a.model, img_size=tuple(a.img_size or (224, 224))).to(a.device).eval()


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from reid.datasets import load_dataset
    from reid.engine import evaluate_model
    _require_data_dir(a)
    ds = load_dataset(Path(a.data_dir), a.dataset)
    model = _load_for_eval(a)
    protocols = ('standard', 'legacy') if a.protocol == 'both' else (a.protocol,)
    results = evaluate_model(model, ds.query, ds.gallery, batch_size=a.batch_size, flip=a.flip, rerank=a.rerank,
                             protocols=protocols, device=a.device, num_workers=a.workers,
                             visualize_dir=a.visualize)
    for p in protocols:
        label = 'standard Market-1501 protocol' if p == 'standard' else 'legacy protocol (seed; top-10, inflated)'
        r = results[p]
        extra = f"  mINP {r['mINP']:.2f}" if 'mINP' in r else ''
        print(f"{label:45s} Rank-1 {r['rank1']:.2f}  Rank-5 {r['rank5']:.2f}  Rank-10 {r['rank10']:.2f}  "
              f"mAP {r['mAP']:.2f}{extra}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


def _cmd_complexity(a: argparse.Namespace) -> None:
    from models.complexity import complexity_report
    a.device = 'cpu'
    model = _load_for_eval(a)
    r = complexity_report(model)
    print(f"{model.name} {model.img_size[0]}x{model.img_size[1]} heads/block {model.heads_per_block()}")
    print(f"seed-convention FLOPs (blocks, MACs): {r['seed_gflops']:.3f} G")
    print(f"real FLOPs (whole model, MACs):       {r['real_gmacs']:.3f} G")
    print(f"MSA params: {r['msa_params_m']:.3f} M   all params: {r['params_m']:.3f} M")


def _cmd_prune(a: argparse.Namespace) -> None:
    from pruning.schedule import PruneConfig, prune
    _require_data_dir(a)
    if not a.weight_path:
        raise ValueError('--weight-path is required: pruning starts from a trained checkpoint')
    cfg = PruneConfig(weight_path=a.weight_path, data_dir=a.data_dir, name=a.name, model=a.model,
                      output_dir=a.output_dir, dataset=a.dataset, img_size=a.img_size, batch_size=a.batch_size,
                      prune_mode=a.prune_mode, prune_rate=a.prune_rate, head_rate=a.head_rate,
                      token_rate=a.token_rate, iter_nums=a.iter_nums, finetune_nums=a.finetune_nums,
                      final_finetune=a.final_finetune, lr=a.lr, wd=a.wd, distill_type=a.distill_type,
                      distill_alpha=a.distill_alpha, distill_tau=a.distill_tau, token_mode=a.token_mode,
                      drop_blocks=tuple(int(b) for b in a.drop_blocks.split(',') if b.strip()),
                      fuse_token=a.fuse_token, score_batches=a.score_batches,
                      num_workers=a.workers, seed=a.seed, device=a.device)
    cfg.rates()  # flag errors before any loading
    s = prune(cfg)
    if 'rank' in s:  # a torchrun worker other than rank 0: rank 0 reports
        return
    b, f = s['before'], s['after']
    print(f"checkpoint: {s['checkpoint']}")
    print(f"heads {b['heads']} -> {f['heads']}   MSA params {b['msa_params_m']:.3f}M -> {f['msa_params_m']:.3f}M   "
          f"seed FLOPs {b['seed_gflops']:.3f}G -> {f['seed_gflops']:.3f}G   real {b['real_gmacs']:.3f}G -> "
          f"{f['real_gmacs']:.3f}G")
    for p, r in s['results'].items():
        print(f"{p:9s} Rank-1 {r['rank1']:.2f}  mAP {r['mAP']:.2f}")


def _cmd_export(a: argparse.Namespace) -> None:
    from models.checkpoints import load_model
    from models.export import export_onnx, file_sha256
    model = load_model(a.weight_path, a.model, img_size=a.img_size)
    out = a.output or Path(a.weight_path).with_suffix('.onnx')
    export_onnx(model, out, checkpoint_sha256=file_sha256(a.weight_path))
    print(out)


def _service_settings(a: argparse.Namespace):
    from app.settings import Settings
    overrides = {}
    if a.data_dir is not None:
        overrides['data_dir'] = a.data_dir
    if a.weight_path is not None:
        overrides['model_path'] = a.weight_path
    return Settings(**overrides)


def _cmd_serve(a: argparse.Namespace) -> None:
    from app.serve import serve
    serve(_service_settings(a), host=a.host, port=a.port)


def _cmd_index(a: argparse.Namespace) -> None:
    from app.serve import index_folder
    from app.state import NoModel
    try:
        print(json.dumps(index_folder(a.folder, _service_settings(a), split=a.split)))
    except NoModel as e:
        raise ValueError(str(e)) from None


def _cmd_models(a: argparse.Namespace) -> None:
    from models.la_transformer import list_models
    print('\n'.join(list_models()))


COMMANDS = dict(synth=_cmd_synth, prepare=_cmd_prepare, train=_cmd_train, evaluate=_cmd_evaluate,
                complexity=_cmd_complexity, prune=_cmd_prune, export=_cmd_export, serve=_cmd_serve,
                index=_cmd_index, models=_cmd_models)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    from models.checkpoints import CheckpointError
    from models.embedder import ImageError
    from reid.datasets import DatasetError
    try:
        COMMANDS[args.command](args)
    except (DatasetError, CheckpointError, ImageError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f'amg-reid {args.command}: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
