"""The AMG prune / fine-tune schedule: ``iter_nums`` rounds of (score, prune, fine-tune), then a final fine-tune.

:func:`prune_model` is the algorithm (model, teacher, loaders, plan -> pruned model and round results); :func:`prune`
runs it for ``amg-reid prune`` and the service's prune jobs (loading, data, torchrun, saving, evaluation).
"""
import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from models.checkpoints import load_model, read_metadata, save_checkpoint
from models.complexity import complexity_report
from models.la_transformer import LATransformer
from reid.config import RecipeOptions, RecipeSettings
from reid.data import make_loader, split_validation
from reid.datasets import load_dataset
from reid.distributed import SINGLE, Distributed, setup_distributed
from reid.engine import calibrate_model, ce_step, evaluate_model, recipe_step, set_seed, train_one_epoch
from reid.export import export_int8_calibrated
from reid.progress import Cancelled, Progress, ProgressCallback, RunSummary

from .config import Distill, PruneConfig, PruneMode, TokenMode
from .distill import distillation_loss
from .heads import apply_heads, head_prune_count, select_heads
from .scoring import score_model
from .tokens import apply_kv_tokens, select_dropped_tokens, select_kv_tokens, token_prune_count

__all__ = ['PruneConfig', 'PruneMode', 'TokenMode', 'PrunePlan', 'RoundTarget', 'prune', 'prune_model',
           'prune_round']

_logger = logging.getLogger(__name__)


def prune_round(model: LATransformer, scores, heads_to_remove: int, tokens_to_remove: int,
                drop: Optional[Tuple[Tuple[int, ...], float, bool]] = None) -> None:
    """Apply one round's decisions from one scoring pass (tokens first: head removal renumbers heads only).

    ``drop`` = (blocks, keep ratio, fuse) switches tokens from key/value pruning to token dropping.
    """
    if drop is not None:
        blocks, keep_ratio, fuse = drop
        model.set_token_keep(select_dropped_tokens(scores.token, model.sequence_positions(), blocks, keep_ratio),
                             fuse)
    elif tokens_to_remove:
        kept = select_kv_tokens(scores.token, model.kv_index_per_block(), tokens_to_remove)
        apply_kv_tokens(model, kept)
    if heads_to_remove:
        apply_heads(model, select_heads(scores.entropy, heads_to_remove))


def _round_targets(total: int, rounds: int) -> List[int]:
    """How many to remove in each round so that after round r the cumulative count is round(total · r / rounds)."""
    cumulative = [int(round(total * r / rounds)) for r in range(rounds + 1)]
    return [b - a for a, b in zip(cumulative, cumulative[1:])]


@dataclass(frozen=True)
class RoundTarget:
    """One round's removals: heads and key/value tokens (counts), or token dropping (blocks, keep ratio, fuse)."""
    heads: int = 0
    tokens: int = 0
    drop: Optional[Tuple[Tuple[int, ...], float, bool]] = None


@dataclass
class PrunePlan:
    """What :func:`prune_model` does: the rounds, the fine-tuning after each and at the end (Adam at ``lr``, the
    final one with the seed's StepLR(3, 0.7)), its recipe and its distillation."""
    rounds: List[RoundTarget]
    finetune_epochs: int = 0
    final_epochs: int = 0
    lr: float = 1e-4
    weight_decay: float = 1e-3
    settings: RecipeSettings = field(default_factory=lambda: RecipeOptions(recipe='la').settings())
    distill: Tuple[Distill, float, float] = (Distill.NONE, 0.0, 1.0)
    score_batches: Optional[int] = None
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: PruneConfig, model: LATransformer) -> 'PrunePlan':
        head_rate, token_rate = cfg.rates()
        heads = _round_targets(head_prune_count(model.heads_per_block(), head_rate), cfg.iter_nums)
        drop = cfg.token_mode == TokenMode.DROP
        total_tokens = 0 if drop else token_prune_count(model.num_tokens - 1, len(model.blocks), token_rate)
        rounds = []
        for r, (n_heads, n_tokens) in enumerate(zip(heads, _round_targets(total_tokens, cfg.iter_nums)), start=1):
            # dropping: the rate grows over the rounds; each round re-ranks the survivors with fresh scores
            spec = (tuple(cfg.drop_blocks), 1 - token_rate * r / cfg.iter_nums, cfg.fuse_token) \
                if drop and token_rate else None
            rounds.append(RoundTarget(n_heads, n_tokens, spec))
        return cls(rounds=rounds, finetune_epochs=cfg.finetune_nums, final_epochs=cfg.final_finetune, lr=cfg.lr,
                   weight_decay=cfg.weight_decay, settings=cfg.settings(),
                   distill=(cfg.distill_type, cfg.distill_alpha, cfg.distill_tau), score_batches=cfg.score_batches,
                   seed=cfg.seed)

    @property
    def total_steps(self) -> int:
        return len(self.rounds) * (1 + self.finetune_epochs) + self.final_epochs


def prune_model(model: LATransformer, teacher: Optional[LATransformer], train_loader, score_loader, plan: PrunePlan,
                device: torch.device = torch.device('cpu'), dist: Distributed = SINGLE, progress: bool = True,
                on_progress: Optional[ProgressCallback] = None) -> List[Dict]:
    """Run ``plan`` on ``model`` in place: per round score (un-augmented ``score_loader``), prune, fine-tune
    (``train_loader``, distilling from ``teacher``); then the final fine-tune. Returns the progress records.

    ``on_progress`` returning True stops it (:class:`Cancelled`); under torchrun rank 0's answer reaches every rank.
    """
    kind, alpha, tau = plan.distill
    if kind != Distill.NONE and teacher is None:
        raise ValueError(f'distillation {kind.value!r} needs a teacher')

    def part_loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the teacher runs once per batch for all parts, on the same (occluded) images
            t = teacher.forward_logits(x) if kind != Distill.NONE else None
        return distillation_loss(logits, t, y, kind, alpha, tau, plan.settings.label_smoothing)

    step = recipe_step(plan.settings, part_loss)
    done, history = 0, []

    def report(stage: str, metrics: Optional[Dict[str, float]] = None, **info) -> None:
        event = Progress(stage, done / max(plan.total_steps, 1), dict(metrics or {}),
                         dict(info, heads=sum(model.heads_per_block())))
        history.append(event.flat())
        cancel = False
        if dist.is_main:  # rank 0 reports; its cancel flag reaches every rank
            _logger.info('%s', {k: (round(v, 4) if isinstance(v, float) else v) for k, v in event.flat().items()})
            cancel = bool(on_progress and on_progress(event))
        if dist.all_reduce(torch.tensor([float(cancel)])).item():
            raise Cancelled(f'pruning cancelled at {stage}')

    for r, target in enumerate(plan.rounds, start=1):
        if target.heads or target.tokens or target.drop:
            if hasattr(score_loader, 'generator'):
                score_loader.generator.manual_seed(plan.seed + 1000 * r)
            scores = score_model(model, score_loader, device, ce_step, plan.score_batches, progress, dist)
            prune_round(model, scores, target.heads, target.tokens, target.drop)
        done += 1
        report('pruned', round=r, removed_heads=target.heads, removed_tokens=target.tokens)
        optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
        net = dist.wrap(model)  # after this round's pruning: DDP must see the new shapes
        for e in range(plan.finetune_epochs):
            metrics = train_one_epoch(net, train_loader, optimizer, device, step, f'round {r} finetune {e + 1}',
                                      progress)
            done += 1
            report('finetune', metrics, round=r, epoch=e + 1)
    if plan.final_epochs:
        optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.7)
        net = dist.wrap(model)
        for e in range(plan.final_epochs):
            metrics = train_one_epoch(net, train_loader, optimizer, device, step, f'final finetune {e + 1}', progress)
            scheduler.step()
            done += 1
            report('final', metrics, epoch=e + 1)
    return history


def prune(cfg: PruneConfig, progress: bool = True, on_progress: Optional[ProgressCallback] = None) -> RunSummary:
    """Prune a trained checkpoint and fine-tune it with distillation; writes ``<run_dir>/pruned.safetensors`` and
    ``prune.json``, then evaluates it on the test split (standard and legacy protocols).

    Under ``torchrun`` every rank scores and fine-tunes its slice of each global batch (DistributedDataParallel);
    the decisions are the same on every rank, and rank 0 evaluates and writes the outputs."""
    set_seed(cfg.seed)
    dist = setup_distributed(cfg.device)
    device = dist.device
    progress = progress and dist.is_main
    model = load_model(cfg.weight_path, cfg.model, img_size=cfg.img_size, device=device)
    # kept by pruning; a model without one gets one only when asked (--visibility), not from the recipe's default
    model.set_visibility_head(model.has_visibility or bool(cfg.visibility))
    _, extra = read_metadata(cfg.weight_path) if str(cfg.weight_path).endswith('.safetensors') else (None, {})
    plan = PrunePlan.from_config(cfg, model)

    ds = load_dataset(Path(cfg.data_dir), cfg.dataset)
    split = extra.get('split', dict(val_fraction=0.0, seed=cfg.seed))
    train_records, val = split_validation(ds.train, split['val_fraction'], split['seed'])
    num_classes = len({r.pid for r in train_records})
    if model.num_classes != num_classes:
        raise ValueError(f'{cfg.weight_path} has {model.num_classes} classes but {ds.root} gives {num_classes} '
                         f'training identities: prune with the dataset the model was trained on')
    loader = dist.shard(make_loader(train_records, model.img_size, cfg.batch_size, train=True,
                                    num_workers=cfg.num_workers, seed=cfg.seed, settings=plan.settings))
    # scores come from un-augmented images (random flips would make them depend on the RNG and the rank count)
    score_loader = dist.shard(make_loader(train_records, model.img_size, cfg.batch_size, train=True, augment=False,
                                          num_workers=cfg.num_workers, seed=cfg.seed))
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if cfg.distill_type != Distill.NONE else None
    before = complexity_report(model)
    history = prune_model(model, teacher, loader, score_loader, plan, device, dist, progress, on_progress)
    checkpoint = cfg.run_dir / 'pruned.safetensors'
    if not dist.is_main:
        dist.barrier()  # rank 0 evaluates and writes
        return RunSummary(checkpoint=str(checkpoint), history=history, rank=dist.rank,
                          details=dict(heads=model.heads_per_block(), kv_tokens=_kv_tokens(model)))

    after = complexity_report(model)
    out_extra = dict(extra, pruned_from=str(cfg.weight_path), prune=cfg.model_dump(mode='json'), complexity=after)
    if val is not None:
        out_extra.update(calibrate_model(model, val, cfg.batch_size, device))
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, checkpoint, out_extra)
    results = evaluate_model(model, ds.query, ds.gallery, batch_size=cfg.batch_size, device=device,
                             progress=progress)
    summary = RunSummary(checkpoint=str(checkpoint), metrics=dict(results['standard']), history=history,
                         details=dict(before=before, after=after, heads=model.heads_per_block(),
                                      kv_tokens=_kv_tokens(model), results=results))
    if cfg.int8:
        summary.details['int8'] = str(export_int8_calibrated(checkpoint, train_records, seed=cfg.seed))
    (cfg.run_dir / 'prune.json').write_text(json.dumps(asdict(summary), indent=2, default=str))
    if on_progress:
        on_progress(Progress('done', 1.0, dict(results['standard']), dict(heads=sum(model.heads_per_block()))))
    dist.barrier()
    return summary


def _kv_tokens(model: LATransformer) -> List[int]:
    return [len(model.key_positions(i)) for i in range(len(model.blocks))]
