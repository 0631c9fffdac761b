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

from pruning.config import PruneConfig
from reid.config import AdaptConfig, TrainConfig
from reid.options import add_config_arguments, config_from_args
from reid.synthetic import SynthConfig

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
    synth = SynthConfig()
    p.add_argument('out', type=Path)
    p.add_argument('--ids', type=int, default=synth.num_ids, help='identities (half train, half test)')
    p.add_argument('--cams', type=int, default=synth.num_cams)
    p.add_argument('--imgs-per-id', type=int, default=synth.imgs_per_id)
    p.add_argument('--occluded', action='store_true', help='Occluded-Duke-like: every query occluded')
    p.add_argument('--occlusion', nargs=2, type=float, metavar=('MIN', 'MAX'), default=synth.occlusion,
                   help='share of the figure\'s pixels an occluder hides (with --occluded; default %(default)s)')
    p.add_argument('--occluded-train', type=float, default=synth.occluded_train,
                   help='share of training images occluded (with --occluded; default %(default)s)')
    p.add_argument('--occluded-gallery', type=float, default=synth.occluded_gallery,
                   help='share of gallery images occluded (with --occluded; default %(default)s)')
    p.add_argument('--difficulty', type=float, default=synth.difficulty, help='0 (easy) .. 1 (hard)')
    p.add_argument('--junk', type=int, default=synth.junk)
    p.add_argument('--distractors', type=int, default=synth.distractors)
    p.add_argument('--seed', type=int, default=synth.seed)
    p.add_argument('--site', type=int, default=synth.site, help='0, or another installation: its own people '
                   'and camera looks (backgrounds, light and colour cast, camera height, blur, noise, clothing '
                   'palette), the domain `amg-reid adapt` adapts to')

    p = sub.add_parser('prepare', help='convert datasets (Market-1501 -> ImageFolder, DukeMTMC -> Occluded-Duke)')
    p.add_argument('kind', choices=['market-imagefolder', 'occluded-duke'])
    p.add_argument('src', type=Path, help='Market-1501 folder, or DukeMTMC-reID.zip')
    p.add_argument('dst', type=Path)
    p.add_argument('--lists', type=Path, help='folder with train.list, gallery.list, query.list (occluded-duke)')

    p = sub.add_parser('train', help='train an LA-Transformer (strong Re-ID recipe, or --recipe la)')
    add_config_arguments(p, TrainConfig)

    p = sub.add_parser('evaluate', help='Rank-k / mAP / mINP (standard protocol, and the seed\'s legacy one)')
    _add_model_args(p, default_batch=128)
    p.add_argument('--protocol', choices=['standard', 'legacy', 'both'], default='both')
    p.add_argument('--flip', action='store_true', help='average features of each image and its mirror')
    p.add_argument('--rerank', action='store_true', help='k-reciprocal re-ranking')
    p.add_argument('--json', type=Path, help='also write the results here')
    p.add_argument('--visualize', type=Path, metavar='DIR', help='write ranked-result PNGs and a CMC curve here')
    p.add_argument('--multi-shot', type=int, default=1, metavar='K', help="K > 1: each identity's query crops "
                   'pooled K at a time into one query (a multi-shot query, as POST /v1/search with group=true)')
    p.add_argument('--visibility', action='store_true', help='score on the parts both images show (a model '
                   'trained with --visibility W: its visibility head)')

    p = sub.add_parser('complexity', help='FLOPs (seed convention and real count) and MSA parameters')
    p.add_argument('--model', default='amg_vit_tiny_patch16_224')
    p.add_argument('--weight-path', '--weight_path', dest='weight_path')
    p.add_argument('--img-size', nargs=2, type=int, metavar=('H', 'W'))

    p = sub.add_parser('prune', help='AMG pruning (tokens, heads or both) with distillation fine-tuning')
    add_config_arguments(p, PruneConfig)

    p = sub.add_parser('adapt', help='adapt a model to unlabelled crops (a folder, or the service\'s gallery: '
                       'AMG_DATA_DIR / AMG_DATABASE_URL) without labels: clustering, tracks, distillation')
    add_config_arguments(p, AdaptConfig)

    p = sub.add_parser('export', help='write CHECKPOINT.onnx (embedding, dynamic batch) beside the checkpoint')
    p.add_argument('--weight-path', '--weight_path', dest='weight_path', required=True)
    p.add_argument('--model', default=None, help='only for foreign checkpoints')
    p.add_argument('--output', type=Path, help='default: the checkpoint path with .onnx')
    p.add_argument('--img-size', nargs=2, type=int, metavar=('H', 'W'))
    p.add_argument('--int8', action='store_true', help='also write CHECKPOINT.int8.onnx: statically quantised INT8 '
                   '(QDQ, per-channel weights), calibrated on --data-dir training images (AMG_BACKEND=onnx-int8); '
                   "and, where nncf is installed, CHECKPOINT.int8.xml: NNCF's INT8 (AMG_BACKEND=openvino-int8)")
    p.add_argument('--data-dir', '--data_dir', dest='data_dir', help='for --int8: the dataset the model was trained on')
    p.add_argument('--calibration-images', type=int, default=300, help='for --int8: how many training images')
    p.add_argument('--openvino', action='store_true', help="check that OpenVINO's CPU plugin runs the export "
                   '(AMG_BACKEND=openvino) and say in which precision and how close to eager PyTorch')

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
    from reid.synthetic import generate_dataset
    cfg = SynthConfig(num_ids=a.ids, num_cams=a.cams, imgs_per_id=a.imgs_per_id, occluded=a.occluded,
                      occlusion=tuple(a.occlusion), occluded_train=a.occluded_train,
                      occluded_gallery=a.occluded_gallery, difficulty=a.difficulty, junk=a.junk,
                      distractors=a.distractors, seed=a.seed, site=a.site)
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
    from reid.engine import train
    summary = train(config_from_args(TrainConfig, a))
    if summary.is_main:  # a torchrun worker other than rank 0 stays quiet
        print(json.dumps(dict(best=summary.checkpoint, best_epoch=summary.details.get('best_epoch'),
                              metrics=summary.metrics, last_epoch=summary.history[-1] if summary.history else {}),
                         indent=2))


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
                             visualize_dir=a.visualize, multi_shot=a.multi_shot, visibility=a.visibility)
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
    from pruning.schedule import prune
    s = prune(config_from_args(PruneConfig, a))
    if not s.is_main:  # a torchrun worker other than rank 0: rank 0 reports
        return
    b, f = s.details['before'], s.details['after']
    print(f"checkpoint: {s.checkpoint}")
    print(f"heads {b['heads']} -> {f['heads']}   MSA params {b['msa_params_m']:.3f}M -> {f['msa_params_m']:.3f}M   "
          f"seed FLOPs {b['seed_gflops']:.3f}G -> {f['seed_gflops']:.3f}G   real {b['real_gmacs']:.3f}G -> "
          f"{f['real_gmacs']:.3f}G")
    for p, r in s.details['results'].items():
        print(f"{p:9s} Rank-1 {r['rank1']:.2f}  mAP {r['mAP']:.2f}")


def _cmd_adapt(a: argparse.Namespace) -> None:
    from app.adaptation import run_adapt
    cfg = config_from_args(AdaptConfig, a)
    if cfg.data_dir is not None:
        s = run_adapt(cfg, progress=True)
        model_id = None
    else:  # the service's gallery, and its model registry: the model can be activated at once
        from app.registry import ensure_onnx, register_checkpoint
        from app.settings import Settings
        from storage.db import make_engine, make_sessionmaker
        from storage.images import ImageStore
        settings = Settings()
        Session = make_sessionmaker(make_engine(settings.database_url))
        s = run_adapt(cfg, Session, ImageStore(settings.data_dir / 'images'), progress=True)
        ensure_onnx(s.checkpoint)
        with Session.begin() as session:
            model_id = register_checkpoint(session, s.checkpoint, name=f'adapted ({cfg.name})').id
    print(json.dumps(dict(checkpoint=s.checkpoint, model_id=model_id, metrics=s.metrics), indent=2))
    if model_id is not None:
        print(f'activate it: POST /v1/admin/models/{model_id}/activate')


def _cmd_export(a: argparse.Namespace) -> None:
    from models.checkpoints import load_model
    from models.export import export_onnx, file_sha256
    model = load_model(a.weight_path, a.model, img_size=a.img_size)
    out = a.output or Path(a.weight_path).with_suffix('.onnx')
    export_onnx(model, out, checkpoint_sha256=file_sha256(a.weight_path))
    print(out)
    if a.int8:
        from reid.datasets import load_dataset
        from reid.export import export_int8_calibrated
        if not a.data_dir:
            raise SystemExit('export --int8 needs --data-dir: the dataset whose training images calibrate it')
        from models.openvino_backend import ov_int8_path_for
        print(export_int8_calibrated(a.weight_path, load_dataset(Path(a.data_dir)).train, a.calibration_images))
        if ov_int8_path_for(a.weight_path).is_file():
            print(ov_int8_path_for(a.weight_path))
    if a.openvino:
        _check_openvino(a.weight_path, model)


def _check_openvino(checkpoint: str, model) -> None:
    """The export on OpenVINO against eager PyTorch, on random inputs (what the service would run)."""
    import numpy as np
    import torch

    from models.embedder import Embedder
    from models.openvino_backend import openvino_available
    if not openvino_available():
        raise SystemExit('export --openvino needs the openvino package (pip install -e .[openvino])')
    embedder = Embedder(checkpoint, backend='openvino')
    if embedder.backend != 'openvino':
        raise SystemExit('OpenVINO cannot run the export (see the warning above)')
    x = torch.randn(2, 3, *model.img_size)
    with torch.no_grad():
        eager = model.eval().embed(x).numpy()
    got = embedder.embed_tensor(x).numpy()
    cosine = float(((got * eager).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(eager, axis=1)).min())
    print(f'OpenVINO {embedder.precision}: runs the export; cosine to eager PyTorch >= {cosine:.6f}')


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
    from app.snapshot import NoModel
    try:
        print(json.dumps(index_folder(a.folder, _service_settings(a), split=a.split)))
    except NoModel as e:
        raise ValueError(str(e)) from None


def _cmd_models(a: argparse.Namespace) -> None:
    from models.la_transformer import list_models
    print('\n'.join(list_models()))


COMMANDS = dict(synth=_cmd_synth, prepare=_cmd_prepare, train=_cmd_train, evaluate=_cmd_evaluate,
                complexity=_cmd_complexity, prune=_cmd_prune, adapt=_cmd_adapt, export=_cmd_export, serve=_cmd_serve,
                index=_cmd_index, models=_cmd_models)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    from models.imaging import ImageError
    from models.records import CheckpointError
    from reid.datasets import DatasetError
    try:
        COMMANDS[args.command](args)
    except (DatasetError, CheckpointError, ImageError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f'amg-reid {args.command}: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
