"""The AMG prune / fine-tune schedule: ``iter_nums`` rounds of (score, prune, fine-tune), then a final fine-tune.

``amg-reid prune`` and the service's prune jobs both call :func:`prune`.
"""
import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple

import torch

from models.checkpoints import load_model, read_metadata, save_checkpoint
from models.complexity import complexity_report
from models.la_transformer import LATransformer
from reid.data import make_loader, split_validation
from reid.datasets import load_dataset
from reid.distributed import setup_distributed
from reid.engine import calibrate_model_threshold, ce_step, evaluate_model, set_seed, train_one_epoch

from .distill import DistillKind, distillation_loss
from .heads import apply_heads, head_prune_count, select_heads
from .scoring import score_model
from .tokens import apply_kv_tokens, select_dropped_tokens, select_kv_tokens, token_prune_count

__all__ = ['PruneConfig', 'prune', 'prune_round', 'PRUNE_MODES']

_logger = logging.getLogger(__name__)
PRUNE_MODES = ('attn', 'head_entropy', 'head_attn')
# progress callback: (event dict) -> True to cancel
ProgressCallback = Callable[[Dict], Optional[bool]]


@dataclass
class PruneConfig:
    """The seed's ``finetune.py`` flags. ``prune_rate`` is the token rate for ``attn``, the head rate for
    ``head_entropy``; ``head_attn`` takes ``head_rate`` and ``token_rate``."""
    weight_path: str
    data_dir: str
    name: str = 'pruned'
    model: Optional[str] = None
    output_dir: str = 'runs'
    dataset: Optional[str] = None
    img_size: Optional[Tuple[int, int]] = None
    batch_size: int = 32
    prune_mode: Literal['attn', 'head_entropy', 'head_attn'] = 'attn'
    prune_rate: float = 0.0
    head_rate: float = 0.0
    token_rate: float = 0.0
    iter_nums: int = 1
    finetune_nums: int = 0
    final_finetune: int = 10
    lr: float = 1e-4
    wd: float = 1e-3
    distill_type: DistillKind = 'soft'
    distill_alpha: float = 0.2
    distill_tau: float = 1.0
    token_mode: Literal['kv', 'drop'] = 'kv'
    drop_blocks: Tuple[int, ...] = (3, 6, 9)
    fuse_token: bool = False
    score_batches: Optional[int] = None
    num_workers: int = 0
    seed: int = 0
    device: str = 'cpu'

    def rates(self) -> Tuple[float, float]:
        """(head rate, token rate) after mode resolution; validates the flags."""
        if self.prune_mode not in PRUNE_MODES:
            raise ValueError(f'unknown prune mode {self.prune_mode!r}; choose from {", ".join(PRUNE_MODES)}')
        if self.prune_mode == 'attn':
            head, token = 0.0, self.prune_rate
        elif self.prune_mode == 'head_entropy':
            head, token = self.prune_rate, 0.0
        else:
            head, token = self.head_rate, self.token_rate
            if head == 0 and token == 0:
                raise ValueError('head_attn needs --head_rate and/or --token_rate')
        for label, rate in (('head', head), ('token', token)):
            if not 0 <= rate < 1:
                raise ValueError(f'{label} rate must be in [0, 1), got {rate}')
        if self.iter_nums < 1:
            raise ValueError(f'iter_nums must be >= 1, got {self.iter_nums}')
        if self.finetune_nums < 0 or self.final_finetune < 0:
            raise ValueError('finetune_nums and final_finetune must be >= 0')
        if self.distill_type not in ('none', 'soft', 'hard'):
            raise ValueError(f'unknown distill type {self.distill_type!r}; choose from none, soft, hard')
        if self.token_mode not in ('kv', 'drop'):
            raise ValueError(f'unknown token mode {self.token_mode!r}; choose from kv, drop')
        if self.token_mode == 'drop' and not self.drop_blocks:
            raise ValueError('token mode drop needs --drop_blocks')
        return head, token

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


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


def prune(cfg: PruneConfig, progress: bool = True, on_event: Optional[ProgressCallback] = None) -> Dict:
    """Prune a trained checkpoint and fine-tune it with distillation; writes ``<run_dir>/pruned.safetensors``.

    Under ``torchrun`` every rank scores and fine-tunes its slice of each global batch (DistributedDataParallel);
    the decisions are the same on every rank, and rank 0 evaluates and writes the outputs."""
    head_rate, token_rate = cfg.rates()
    set_seed(cfg.seed)
    dist = setup_distributed(cfg.device)
    device = dist.device
    progress = progress and dist.is_main
    model = load_model(cfg.weight_path, cfg.model, img_size=cfg.img_size, device=device)
    _, extra = read_metadata(cfg.weight_path) if str(cfg.weight_path).endswith('.safetensors') else (None, {})
    total_heads = head_prune_count(model.heads_per_block(), head_rate)
    total_tokens = 0 if cfg.token_mode == 'drop' else token_prune_count(model.num_tokens - 1, len(model.blocks),
                                                                        token_rate)

    ds = load_dataset(Path(cfg.data_dir), cfg.dataset)
    split = extra.get('split', dict(val_fraction=0.0, seed=cfg.seed))
    train_records, val = split_validation(ds.train, split['val_fraction'], split['seed'])
    num_classes = len({r.pid for r in train_records})
    if model.num_classes != num_classes:
        raise ValueError(f'{cfg.weight_path} has {model.num_classes} classes but {ds.root} gives {num_classes} '
                         f'training identities: prune with the dataset the model was trained on')
    loader = dist.shard(make_loader(train_records, model.img_size, cfg.batch_size, train=True,
                                    num_workers=cfg.num_workers, seed=cfg.seed))
    # scores come from un-augmented images (random flips would make them depend on the RNG and the rank count)
    score_loader = dist.shard(make_loader(train_records, model.img_size, cfg.batch_size, train=True, augment=False,
                                          num_workers=cfg.num_workers, seed=cfg.seed))
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if cfg.distill_type != 'none' else None
    before = complexity_report(model)

    def step(m: LATransformer, x: torch.Tensor, y: torch.Tensor):
        logits = m.forward_logits(x)
        with torch.no_grad():  # the teacher runs once per batch for all parts
            t = teacher.forward_logits(x) if teacher is not None else None
        return distillation_loss(logits, t, y, cfg.distill_type, cfg.distill_alpha, cfg.distill_tau), logits

    total_steps = cfg.iter_nums * (1 + cfg.finetune_nums) + cfg.final_finetune
    done = 0
    history = []

    def report(stage: str, **info) -> bool:
        event = dict(stage=stage, progress=done / total_steps, heads=sum(model.heads_per_block()), **info)
        history.append(event)
        if not dist.is_main:  # rank 0 reports; its cancel flag reaches every rank
            return bool(dist.all_reduce(torch.zeros(1)).item())
        _logger.info('%s', {k: (round(v, 4) if isinstance(v, float) else v) for k, v in event.items()})
        cancel = bool(on_event and on_event(event))
        return bool(dist.all_reduce(torch.tensor([float(cancel)])).item())

    cancelled = False
    for r, (n_heads, n_tokens) in enumerate(zip(_round_targets(total_heads, cfg.iter_nums),
                                                _round_targets(total_tokens, cfg.iter_nums)), start=1):
        drop = None
        if cfg.token_mode == 'drop' and token_rate:
            # the drop rate grows over the rounds; each round re-ranks the survivors with fresh scores
            drop = (tuple(cfg.drop_blocks), 1 - token_rate * r / cfg.iter_nums, cfg.fuse_token)
        if n_heads or n_tokens or drop:
            score_loader.generator.manual_seed(cfg.seed + 1000 * r)
            scores = score_model(model, score_loader, device, ce_step, cfg.score_batches, progress, dist)
            prune_round(model, scores, n_heads, n_tokens, drop)
        done += 1
        cancelled = report('pruned', round=r, removed_heads=n_heads, removed_tokens=n_tokens)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
        net = dist.wrap(model)  # after this round's pruning: DDP must see the new shapes
        for e in range(cfg.finetune_nums):
            if cancelled:
                break
            metrics = train_one_epoch(net, loader, optimizer, device, step, f'round {r} finetune {e + 1}', progress)
            done += 1
            cancelled = report('finetune', round=r, epoch=e + 1, **metrics)
        if cancelled:
            break
    if not cancelled and cfg.final_finetune:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.7)
        net = dist.wrap(model)
        for e in range(cfg.final_finetune):
            metrics = train_one_epoch(net, loader, optimizer, device, step, f'final finetune {e + 1}', progress)
            scheduler.step()
            done += 1
            if report('final', epoch=e + 1, **metrics):
                cancelled = True
                break
    if cancelled:
        raise InterruptedError('pruning cancelled')
    if not dist.is_main:
        dist.barrier()  # rank 0 evaluates and writes
        return dict(checkpoint=str(cfg.run_dir / 'pruned.safetensors'), heads=model.heads_per_block(),
                    kv_tokens=[len(model.key_positions(i)) for i in range(len(model.blocks))], rank=dist.rank)

    after = complexity_report(model)
    out_extra = dict(extra, pruned_from=str(cfg.weight_path), prune=asdict(cfg), complexity=after)
    if val is not None:
        out_extra['min_score'] = calibrate_model_threshold(model, val, cfg.batch_size, device)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(model, cfg.run_dir / 'pruned.safetensors', out_extra)
    results = evaluate_model(model, ds.query, ds.gallery, batch_size=cfg.batch_size, device=device,
                             progress=progress)
    summary = dict(checkpoint=str(path), before=before, after=after, heads=model.heads_per_block(),
                   kv_tokens=[len(model.key_positions(i)) for i in range(len(model.blocks))],
                   results=results, history=history)
    (cfg.run_dir / 'prune.json').write_text(json.dumps(summary, indent=2, default=str))
    if on_event:
        on_event(dict(stage='done', progress=1.0, heads=sum(model.heads_per_block()), results=results))
    dist.barrier()
    return summary
