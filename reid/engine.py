"""Training (the strong Re-ID recipe or LA-Transformer's), feature extraction and evaluation."""
import json
import logging
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoints import load_model, read_metadata, save_checkpoint
from models.embedder import Embedder
from models.la_transformer import LATransformer, create_model

from .config import RecipeSettings, TrainConfig
from .data import make_loader, split_validation
from .datasets import OCCLUDER_RECORD, ImageRecord, load_dataset
from .distributed import setup_distributed
from .export import export_int8_calibrated
from .matching import (ScoreCalibration, multi_shot_queries, mutual_visibility_scores, part_visibility,
                       plain_parts, scale_parts)
from .metrics import (best_match_scores, calibrate_threshold, compute_distance_matrix, eval_market1501, evaluate_rank,
                      fit_score_calibration)
from .progress import Cancelled, Progress, ProgressCallback, RunSummary
from .recipe import batch_hard_triplet_loss, paste_occluders, visibility_targets, warmup_cosine
from .rerank import re_ranking
from .visualize import save_cmc_curve, save_ranked_results

__all__ = ['TrainConfig', 'train', 'train_one_epoch', 'part_ce_loss', 'recipe_step', 'extract_features',
           'evaluate_model', 'calibrate_model', 'set_seed']

_logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def part_ce_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
                 weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LA-Transformer's loss: the sum over parts of each part classifier's cross-entropy. logits (B, P, C).
    ``weights`` (B, P): each part's cross-entropy weighted by them (scaled to mean 1), as VPM asks each region to
    name the person only as far as it is visible."""
    B, P, C = logits.shape
    if weights is None:
        return F.cross_entropy(logits.reshape(B * P, C), y.repeat_interleave(P), reduction='mean',
                               label_smoothing=label_smoothing) * P
    ce = F.cross_entropy(logits.reshape(B * P, C), y.repeat_interleave(P), reduction='none',
                         label_smoothing=label_smoothing).reshape(B, P)
    w = weights.to(ce) / weights.mean().clamp_min(1e-6)
    return (ce * w).mean() * P


# (model, images, labels[, hidden: (B, bands) what the training dataset recorded]) -> (loss, part logits)
LossFn = Callable[..., Tuple[torch.Tensor, torch.Tensor]]
# (student part logits, images, labels) -> the part loss; pruning adds distillation from its teacher here
PartLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ce_step(model: LATransformer, x: torch.Tensor, y: torch.Tensor,
            hidden: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    logits = model.forward_logits(x)
    return part_ce_loss(logits, y), logits


def recipe_step(settings: RecipeSettings, part_loss: Optional[PartLoss] = None) -> LossFn:
    """A training step's loss for the recipe: [pasted occluders ->] part loss (label-smoothed part cross-entropy
    unless ``part_loss`` says otherwise) [+ weighted batch-hard triplet loss on the retrieval embedding] [+ weighted
    binary loss of the visibility head against the share of each part left visible: by the pasted strip and by
    what the dataset recorded in ``hidden`` (reid.recipe.visibility_targets); the part cross-entropies are then
    weighted by the same shares (an occluded part is not asked to name the person: VPM's region loss; measured
    +1.1 mAP plain, +1.8 visibility-weighted, docs/benchmarks.md 8)]."""
    def step(model: LATransformer, x: torch.Tensor, y: torch.Tensor,
             hidden: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        boxes = None
        if settings.paste:
            x, boxes = paste_occluders(x, y, settings.paste)
        # one pass for every loss; under DistributedDataParallel every output must reach the loss (a zero-weight
        # visibility loss still does), or the unused head's parameters stall the gradient reduction
        logits, embedding, visibility = model.forward_train(x)
        target = None if visibility is None else visibility_targets(
            boxes or [None] * len(y), x.shape[2], x.shape[3], visibility.shape[1], hidden).to(x.device)
        weights = target if settings.visibility else None
        loss = part_loss(logits, x, y) if part_loss else part_ce_loss(logits, y, settings.label_smoothing, weights)
        if settings.triplet:
            loss = loss + settings.triplet * batch_hard_triplet_loss(embedding, y, settings.triplet_margin)
        if target is not None:
            loss = loss + settings.visibility * F.binary_cross_entropy_with_logits(visibility, target)
        return loss, logits
    return step


def train_one_epoch(model: LATransformer, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                    loss_fn: LossFn = ce_step, desc: str = 'train', progress: bool = True) -> Dict[str, float]:
    """One pass over a training ``loader`` ((images, labels, hidden) batches: reid.data.ImageDataset);
    ``loss_fn(model, x, y, hidden) -> (loss, part logits)``. Returns mean loss and accuracy."""
    model.train()
    total, correct, loss_sum = 0, 0, 0.0
    bar = tqdm(loader, desc=desc, unit='batch', leave=False, disable=not progress)
    for x, y, hidden in bar:
        x, y = x.to(device), y.to(device)
        loss, logits = loss_fn(model, x, y, hidden)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # accuracy of the summed part scores, as LA-Transformer reports it
        correct += int((logits.softmax(-1).sum(1).argmax(-1) == y).sum())
        total += len(y)
        loss_sum += loss.item() * len(y)
        bar.set_postfix(loss=f'{loss_sum / total:.3f}', acc=f'{correct / total:.3f}')
    return dict(loss=loss_sum / max(total, 1), acc=correct / max(total, 1))


@torch.no_grad()
def extract_features(model: Union[LATransformer, Embedder], records: Sequence[ImageRecord], batch_size: int = 64,
                     flip: bool = False, device: torch.device = torch.device('cpu'), num_workers: int = 0,
                     progress: bool = True, desc: str = 'features') -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, D) float32, pids, camids) with deterministic test transforms; an :class:`Embedder` is used as
    it is (its backend and flip: e.g. an INT8 export)."""
    embedder = model if isinstance(model, Embedder) else Embedder(model, device=device, flip=flip)
    loader = make_loader(records, embedder.model.img_size, batch_size, train=False, num_workers=num_workers)
    feats = [embedder.embed_tensor(x).cpu() for x, _, _ in tqdm(loader, desc=desc, leave=False, disable=not progress)]
    pids = np.array([r.pid for r in records])
    camids = np.array([r.camid for r in records])
    return torch.cat(feats).numpy(), pids, camids


@torch.no_grad()
def extract_visibility(model: LATransformer, records: Sequence[ImageRecord], batch_size: int = 64,
                       device: torch.device = torch.device('cpu'), num_workers: int = 0) -> np.ndarray:
    """Per-part visibility probabilities (N, parts) of the model's visibility head, test transforms."""
    model = model.eval().to(device)
    loader = make_loader(records, model.img_size, batch_size, train=False, num_workers=num_workers)
    return torch.cat([model.visibility(x.to(device)).cpu() for x, _, _ in loader]).numpy()


def evaluate_model(model: Union[LATransformer, Embedder], query: Sequence[ImageRecord], gallery: Sequence[ImageRecord],
                   batch_size: int = 64, flip: bool = False, rerank: bool = False,
                   protocols: Sequence[str] = ('standard', 'legacy'), device: torch.device = torch.device('cpu'),
                   num_workers: int = 0, progress: bool = True,
                   visualize_dir: Optional[Path] = None, multi_shot: int = 1,
                   visibility: bool = False) -> Dict[str, Dict[str, float]]:
    """Embed query and gallery, rank, and score by each protocol (standard first).

    ``visualize_dir`` also writes ranked-result PNGs (query + top-10) and the CMC curve there. ``multi_shot`` K > 1:
    each identity's query crops pooled K at a time into one query (reid.matching.multi_shot_queries; the standard
    protocol then leaves out the gallery images of the same identity from any of the K cameras). ``visibility``:
    score on the parts both images show (reid.matching.mutual_visibility_scores; the model needs its visibility
    head); with ``multi_shot``, each group's parts pooled with their visibilities as weights
    (reid.matching.pool_visible), as the service pools a group query."""
    if multi_shot > 1 and visualize_dir is not None:
        raise ValueError('ranked-result pictures show one query crop: use them without multi-shot')
    net = model.model if isinstance(model, Embedder) else model
    if visibility and not net.has_visibility:
        raise ValueError('visibility-weighted matching needs a model with the visibility head (--visibility)')
    qf, q_pids, q_camids = extract_features(model, query, batch_size, flip, device, num_workers, progress, 'query')
    gf, g_pids, g_camids = extract_features(model, gallery, batch_size, flip, device, num_workers, progress, 'gallery')
    parts = net.num_parts
    if visibility:
        q_vis, g_vis = (extract_visibility(net, r, batch_size, device, num_workers) for r in (query, gallery))
        qf = scale_parts(qf, q_vis, parts)  # the vectors carry their visibilities, as the service's do
    if multi_shot > 1:
        qf, q_pids, q_camids = multi_shot_queries(qf, q_pids, q_camids, multi_shot, parts)
    if visibility:
        distmat = 1 - mutual_visibility_scores(plain_parts(qf, parts), gf, part_visibility(qf, parts), g_vis, parts)
    else:
        distmat = compute_distance_matrix(qf, gf)
    if rerank:
        distmat = re_ranking(distmat, compute_distance_matrix(qf, qf), compute_distance_matrix(gf, gf))
    results = {p: evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, protocol=p) for p in protocols}
    if visualize_dir is not None:
        save_ranked_results(distmat, query, gallery, Path(visualize_dir) / 'ranked')
        cmc, _, _ = eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids)
        save_cmc_curve({net.name: cmc}, Path(visualize_dir) / 'cmc.png')
    return results


def calibrate_model(model: LATransformer, val: Tuple[Sequence[ImageRecord], Sequence[ImageRecord]],
                    batch_size: int = 64, device: torch.device = torch.device('cpu')) -> Dict[str, Any]:
    """What the checkpoint records for the service, from held-out identities: ``min_score``, the "no match"
    similarity threshold, and ``score_calibration``, the cosine -> P(same person) map of the answers' scores. A
    model with the visibility head is calibrated on the score the service answers with: the mutually-visible-part
    score (reid.matching.mutual_visibility_scores)."""
    qf, q_pids, q_cams = extract_features(model, val[0], batch_size, device=device, progress=False)
    gf, g_pids, g_cams = extract_features(model, val[1], batch_size, device=device, progress=False)
    if model.has_visibility:
        q_vis, g_vis = (extract_visibility(model, r, batch_size, device) for r in val)
        sim = mutual_visibility_scores(qf, gf, q_vis, g_vis, model.num_parts)
    else:
        sim = qf @ gf.T
    out: Dict[str, Any] = dict(min_score=calibrate_threshold(sim, q_pids, g_pids, q_cams, g_cams))
    a, b = fit_score_calibration(*best_match_scores(sim, q_pids, g_pids, q_cams, g_cams))
    if a > 0:
        out['score_calibration'] = ScoreCalibration(a, b).record()
    else:  # the held-out identities' best matches are no likelier right at a higher cosine: no evidence to map
        _logger.warning('no score calibration: on the held-out identities a higher cosine is not likelier the same '
                        'person (slope %.3g); the service answers cosines', a)
    return out


def unfrozen_blocks(epoch: int, every: int) -> int:
    """LA-Transformer's schedule: 2 top blocks trainable at epoch 0, one more every ``every`` epochs."""
    return 2 + epoch // every


def apply_blockwise(model: LATransformer, epoch: int, every: int) -> None:
    depth = len(model.blocks)
    n = unfrozen_blocks(epoch, every)
    for i, block in enumerate(model.blocks):
        block.requires_grad_(i >= depth - n)
    for p in model.backbone_parameters():
        p.requires_grad_(n >= depth)


def _build_model(cfg: TrainConfig, num_classes: int, device: torch.device) -> LATransformer:
    if cfg.weight_path:
        model = load_model(cfg.weight_path, cfg.model, img_size=cfg.img_size, num_classes=0, lmbd=cfg.lmbd)
        model.reset_classifier(num_classes)
    else:
        _logger.warning('no --weight-path: training %s from scratch (random init)', cfg.model)
        model = create_model(cfg.model, img_size=cfg.img_size, num_classes=num_classes, lmbd=cfg.lmbd)
    return model.to(device)


def train(cfg: TrainConfig, progress: bool = True, on_progress: Optional[ProgressCallback] = None) -> RunSummary:
    """Train an LA-Transformer; keeps ``last.safetensors`` (resumable) and ``best.safetensors`` (by validation mAP).

    Reports each epoch to ``on_progress`` (True from it stops after that epoch's checkpoints: :class:`Cancelled`).
    The summary is also written to ``<run_dir>/train.json``. Under ``torchrun`` every rank trains on its slice of
    each global batch (DistributedDataParallel); rank 0 validates and writes the checkpoints.
    """
    settings = cfg.recipe_settings()
    set_seed(cfg.seed)
    dist = setup_distributed(cfg.device)
    device = dist.device
    progress = progress and dist.is_main
    ds = load_dataset(Path(cfg.data_dir), cfg.dataset)
    train_records, val = split_validation(ds.train, cfg.val_fraction, cfg.seed)
    num_classes = len({r.pid for r in train_records})
    if settings.visibility and not (settings.paste or settings.erasing or any(r.hidden for r in train_records)):
        nothing = ('nothing hides a part in this training: no pasted strips (--paste), no random erasing '
                   f'(--erasing), no occluders recorded in {ds.root} ({OCCLUDER_RECORD})')
        if cfg.visibility:  # asked for
            raise ValueError(f'the visibility loss has nothing to learn from: {nothing}')
        _logger.warning('no visibility head (the recipe\'s default): %s', nothing)
        settings = replace(settings, visibility=0.0)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, state_path = run_dir / 'last.safetensors', run_dir / 'best.safetensors', run_dir / 'last_state.pt'
    blockwise = bool(cfg.weight_path) if cfg.blockwise is None else cfg.blockwise

    start_epoch, best_map, history = 0, float('-inf'), []
    if cfg.resume and last_path.exists() and state_path.exists():
        model = load_model(last_path).to(device)
        state = torch.load(state_path, map_location='cpu', weights_only=True)
        start_epoch, best_map, history = state['epoch'] + 1, state['best_map'], json.loads(state['history'])
        _logger.info('resuming %s at epoch %d', run_dir, start_epoch)
    else:
        model = _build_model(cfg, num_classes, device)
        state = None
    model.set_visibility_head(model.has_visibility or bool(settings.visibility))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if n in model.no_weight_decay() or p.ndim == 1 else decay).append(p)
    optimizer = torch.optim.Adam([dict(params=decay, weight_decay=cfg.weight_decay),
                                  dict(params=no_decay, weight_decay=0.0)], lr=cfg.lr)
    schedule = warmup_cosine(optimizer, cfg.epochs, settings.warmup_epochs) if settings.cosine else None
    if state is not None:
        optimizer.load_state_dict(state['optimizer'])
        torch.set_rng_state(state['rng'])
    loader = dist.shard(make_loader(train_records, cfg.img_size, cfg.batch_size, train=True,
                                    num_workers=cfg.num_workers, seed=cfg.seed, settings=settings))
    step = recipe_step(settings)
    # the split is recorded so that pruning fine-tunes with the same identity labels
    extra = dict(cfg.extra, dataset=str(ds.root), train_pids=num_classes,
                 split=dict(val_fraction=cfg.val_fraction, seed=cfg.seed), recipe=cfg.recipe.value)
    for epoch in range(start_epoch, cfg.epochs):
        if blockwise:
            apply_blockwise(model, epoch, cfg.unfreeze_every)
            if epoch % cfg.unfreeze_every == 0 and epoch > 0 and schedule is None:
                for g in optimizer.param_groups:
                    g['lr'] *= cfg.lr_decay
        if schedule is not None:
            schedule(epoch)
        loader.generator.manual_seed(cfg.seed + epoch)  # the same shuffles after a resume
        metrics = train_one_epoch(dist.wrap(model), loader, optimizer, device, step,  # wrapped after (un)freezing
                                  desc=f'epoch {epoch + 1}/{cfg.epochs}', progress=progress)
        stop = False
        if dist.is_main:
            if val is not None:
                val_metrics = evaluate_model(model, *val, batch_size=cfg.batch_size, protocols=('standard',),
                                             device=device, progress=False)['standard']
                metrics.update({f'val_{k}': v for k, v in val_metrics.items()})
            metrics['epoch'] = epoch + 1
            history.append(metrics)
            score = metrics.get('val_mAP', -metrics['loss'])
            if score > best_map:
                best_map = score
                save_checkpoint(model, best_path, dict(extra, epoch=epoch + 1, metrics=metrics))
            save_checkpoint(model, last_path, dict(extra, epoch=epoch + 1, metrics=metrics))
            torch.save(dict(epoch=epoch, best_map=best_map, optimizer=optimizer.state_dict(),
                            rng=torch.get_rng_state(), history=json.dumps(history)), state_path)
            _logger.info('epoch %d: %s', epoch + 1, {k: round(v, 4) for k, v in metrics.items()})
            if on_progress is not None:
                report = Progress('train', (epoch + 1) / cfg.epochs, {k: v for k, v in metrics.items() if k != 'epoch'},
                                  dict(epoch=epoch + 1, epochs=cfg.epochs))
                stop = bool(on_progress(report))
        if dist.all_reduce(torch.tensor([float(stop)])).item():
            _logger.info('training stopped by caller after epoch %d', epoch + 1)
            raise Cancelled(f'training cancelled after epoch {epoch + 1}')
    if not dist.is_main:
        dist.barrier()  # rank 0 calibrates and writes the summary
        return RunSummary(checkpoint=str(best_path), rank=dist.rank)
    if val is not None and best_path.exists():
        best = load_model(best_path).to(device)
        _, best_extra = read_metadata(best_path)
        best_extra.update(calibrate_model(best, val, cfg.batch_size, device))
        save_checkpoint(best, best_path, best_extra)
    best_epoch = max(history, key=lambda h: h.get('val_mAP', -h['loss'])) if history else {}
    summary = RunSummary(checkpoint=str(best_path), history=history,
                         metrics={k: v for k, v in best_epoch.items() if k != 'epoch'},
                         details=dict(config=cfg.model_dump(mode='json', exclude={'extra'}), last=str(last_path),
                                      num_classes=num_classes, best_epoch=best_epoch.get('epoch')))
    if cfg.int8:
        summary.details['int8'] = str(export_int8_calibrated(best_path, train_records, seed=cfg.seed))
    (run_dir / 'train.json').write_text(json.dumps(asdict(summary), indent=2, default=str))
    dist.barrier()
    return summary
