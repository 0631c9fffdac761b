"""Unsupervised adaptation of a trained model to a site's unlabelled crops: Cluster Contrast (Dai et al., 2021)
with what tracks give for free.

Every ``cluster_every`` epochs: embed every crop with the current model; pool each track's crops into one node (a
track is one pseudo-identity from the start, and clusters never split it); k-reciprocal Jaccard distances between
the nodes (reid.rerank); DBSCAN (scikit-learn; a node weighs as many crops as it has); a cluster holding two tracks
one camera saw at overlapping times is split (cannot-link); a track DBSCAN leaves alone stays its own
pseudo-identity, a lone crop is left out. A cluster memory (one unit vector per cluster, momentum-updated from the
batches) gives the contrastive loss; distillation from the starting model (1 - cosine of the two embeddings of each
crop) keeps the embedding from drifting where the clusters are wrong. With ``teacher_path`` another model (the
adapted unpruned one, for its pruned version) gives the clusters (once: it does not change), the memory's first
centres and the distillation's targets; its embedding space is the one the student is drawn to, so it should
share the student's origin (a pruned model and its own unpruned source, adapted). Label-free indicators (clusters,
their sizes, the share DBSCAN left unclustered, agreement with the tracks) are reported every epoch; a clustering
that failed (nearly everything unclustered, one giant cluster) ends the run with that reason and no model.
"""
import copy
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoints import load_model, read_metadata, save_checkpoint

from .config import AdaptConfig, RecipeSettings
from .data import make_loader
from .datasets import ImageRecord, ReIDDataset, UnlabelledCrop, load_dataset, load_unlabelled
from .engine import calibrate_model, evaluate_model, extract_features, set_seed
from .progress import Cancelled, Progress, ProgressCallback, RunSummary
from .matching import centre_by_camera
from .rerank import jaccard_distance

__all__ = ['AdaptConfig', 'AdaptFailed', 'PseudoLabels', 'adapt', 'pseudo_labels', 'co_occurring_tracks',
           'clustering_failure', 'check_scores']

_logger = logging.getLogger(__name__)

# what the starting model's checkpoint records that adaptation makes stale: the score calibration was fitted on the
# old embedding, and the metrics are the old model's
_STALE_EXTRA = ('min_score', 'score_calibration', 'metrics', 'epoch')


class AdaptFailed(RuntimeError):
    """The label-free indicators say the clustering failed: no model is written."""


@dataclass
class PseudoLabels:
    labels: np.ndarray  # (N,) pseudo-identity of each crop, 0..clusters-1; -1: left out of training
    stats: Dict[str, float]


def co_occurring_tracks(crops: Sequence[UnlabelledCrop]) -> Set[Tuple[int, int]]:
    """Pairs (a, b), a < b, of tracks one camera saw at overlapping times: two people, whatever they look like."""
    spans: Dict[int, Tuple[int, float, float]] = {}
    for c in crops:
        if c.track is None or c.start is None or c.end is None:
            continue
        cam, start, end = spans.get(c.track, (c.camid, c.start, c.end))
        spans[c.track] = (cam, min(start, c.start), max(end, c.end))
    by_camera: Dict[int, List[Tuple[float, float, int]]] = {}
    for track, (cam, start, end) in spans.items():
        by_camera.setdefault(cam, []).append((start, end, track))
    pairs: Set[Tuple[int, int]] = set()
    for tracks in by_camera.values():
        tracks.sort()
        active: List[Tuple[float, int]] = []  # (end, track) of the tracks still open at this start
        for start, end, track in tracks:
            active = [(e, t) for e, t in active if e > start]
            pairs.update((min(t, track), max(t, track)) for _, t in active)
            active.append((end, track))
    return pairs


def _split_cannot_link(node_labels: np.ndarray, conflicts: Dict[int, Set[int]], weights: np.ndarray,
                       dist: np.ndarray) -> int:
    """Split (in place) every cluster that holds a cannot-link pair: its nodes, heaviest first, each join the
    nearest part with no conflict, or start one. Returns the clusters added."""
    added, next_label = 0, int(node_labels.max()) + 1
    for label in np.unique(node_labels[node_labels >= 0]):
        members = np.where(node_labels == label)[0]
        if not any(conflicts.get(int(m), set()) & set(members.tolist()) for m in members):
            continue
        parts: List[List[int]] = []
        for node in sorted(members.tolist(), key=lambda n: -weights[n]):
            allowed = [p for p in parts if not conflicts.get(node, set()) & set(p)]
            if allowed:
                min(allowed, key=lambda p: dist[node, p].mean()).append(node)
            else:
                parts.append([node])
        for part in parts[1:]:
            node_labels[part] = next_label
            next_label += 1
            added += 1
    return added


def pseudo_labels(features: np.ndarray, tracks: Optional[Sequence[Optional[int]]] = None,
                  cannot_link: Iterable[Tuple[int, int]] = (), eps: float = 0.6, min_samples: int = 4,
                  k1: int = 20, k2: int = 6, cameras: Optional[Sequence[int]] = None) -> PseudoLabels:
    """Pseudo-identities of unit-norm crop ``features`` (N, D): DBSCAN on the k-reciprocal Jaccard distances, each
    track (``tracks[i]``: crop i's track, None: none) one node that clusters never split, ``cannot_link`` pairs of
    tracks never in one cluster, tracks DBSCAN left alone their own pseudo-identity (when they have two crops or
    more), lone crops left alone left out (-1). ``cameras`` (crop i's camera): each camera's mean feature is taken
    out before clustering, so that clusters follow people, not the look of the camera that saw them."""
    from sklearn.cluster import DBSCAN

    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if cameras is not None:
        features = centre_by_camera(features, cameras)
    tracks = [None] * n if tracks is None else list(tracks)
    if len(tracks) != n:
        raise ValueError(f'{len(tracks)} track ids for {n} crops')
    nodes: Dict[Tuple[str, int], int] = {}
    node_of = np.array([nodes.setdefault(('track', t) if t is not None else ('crop', i), len(nodes))
                        for i, t in enumerate(tracks)])
    weights = np.bincount(node_of, minlength=len(nodes))
    pooled = np.zeros((len(nodes), features.shape[1]), dtype=np.float32)
    np.add.at(pooled, node_of, features)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    node_of_track = {key[1]: node for key, node in nodes.items() if key[0] == 'track'}
    conflicts: Dict[int, Set[int]] = {}
    for a, b in cannot_link:
        if a in node_of_track and b in node_of_track:
            na, nb = node_of_track[a], node_of_track[b]
            conflicts.setdefault(na, set()).add(nb)
            conflicts.setdefault(nb, set()).add(na)
    dist = jaccard_distance(pooled, k1, k2) if len(pooled) > 1 else np.zeros((1, 1), np.float32)
    for a, others in conflicts.items():
        dist[a, list(others)] = 1.0  # never neighbours (a chain through a third node is split below)
    node_labels = DBSCAN(eps=eps, min_samples=min_samples, metric='precomputed').fit(
        dist, sample_weight=weights).labels_.copy()
    dbscan_clustered = float(weights[node_labels >= 0].sum()) / max(n, 1)
    splits = _split_cannot_link(node_labels, conflicts, weights, dist) if (node_labels >= 0).any() else 0
    linked_tracks = sum(1 for node in node_of_track.values() if node_labels[node] >= 0
                        and np.count_nonzero(node_labels == node_labels[node]) > 1)
    next_label = int(node_labels.max()) + 1
    for node in node_of_track.values():
        if node_labels[node] < 0 and weights[node] >= 2:
            node_labels[node] = next_label
            next_label += 1
    kept = np.unique(node_labels[node_labels >= 0])
    relabel = np.full(max(int(node_labels.max()) + 1, 1), -1)
    relabel[kept] = np.arange(len(kept))
    labels = np.where(node_labels[node_of] >= 0, relabel[np.maximum(node_labels[node_of], 0)], -1)
    sizes = np.bincount(labels[labels >= 0], minlength=len(kept))
    stats = dict(crops=n, clusters=len(kept), clustered=float((labels >= 0).mean()) if n else 0.0,
                 unclustered=1 - dbscan_clustered, largest_cluster=float(sizes.max() / max(sizes.sum(), 1)) if len(sizes) else 0.0,
                 mean_size=float(sizes.mean()) if len(sizes) else 0.0,
                 median_size=float(np.median(sizes)) if len(sizes) else 0.0, cannot_link_splits=splits)
    if node_of_track:
        stats.update(tracks=len(node_of_track), tracks_linked=linked_tracks / len(node_of_track),
                     track_agreement=_track_agreement(features, labels, tracks))
    return PseudoLabels(labels, stats)


def _track_agreement(features: np.ndarray, labels: np.ndarray, tracks: Sequence[Optional[int]]) -> float:
    """Of the tracked crops that have a pseudo-identity, the share whose own nearest cluster centre is their
    track's cluster: how far the embedding agrees with the tracker, crop by crop (no label needed)."""
    tracked = np.array([t is not None for t in tracks]) & (labels >= 0)
    if not tracked.any():
        return 0.0
    centres = _centres(features, labels)
    return float(((features[tracked] @ centres.T).argmax(1) == labels[tracked]).mean())


def _centres(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-norm mean feature of each pseudo-identity (clusters, D)."""
    kept = labels >= 0
    centres = np.zeros((int(labels.max()) + 1, features.shape[1]), dtype=np.float32)
    np.add.at(centres, labels[kept], features[kept])
    return centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


def clustering_failure(stats: Dict[str, float], min_clustered: float, max_cluster_share: float) -> Optional[str]:
    """Why a clustering cannot train a model (None: it can), from its label-free indicators alone."""
    if 1 - stats['unclustered'] < min_clustered:
        return (f'nearly everything unclustered: DBSCAN clustered {100 * (1 - stats["unclustered"]):.1f}% of the '
                f'crops (want >= {100 * min_clustered:.0f}%; a larger --eps or smaller --min-samples clusters more)')
    if stats['clusters'] < 2:
        return f'{stats["clusters"]} cluster(s): nothing to tell apart'
    if stats['largest_cluster'] > max_cluster_share:
        return (f'one giant cluster holds {100 * stats["largest_cluster"]:.1f}% of the clustered crops (want <= '
                f'{100 * max_cluster_share:.0f}%; a smaller --eps splits more)')
    return None


def check_scores(model, ds: ReIDDataset, batch_size: int = 64, device: torch.device = torch.device('cpu')
                 ) -> Dict[str, float]:
    """A labelled check set (Market-1501 layout) scored as ``amg-reid evaluate`` scores it (standard protocol)."""
    return evaluate_model(model, ds.query, ds.gallery, batch_size=batch_size, protocols=('standard',),
                          device=device, progress=False)['standard']


def _limit(crops: Sequence[UnlabelledCrop], max_crops: int, seed: int) -> List[UnlabelledCrop]:
    """At most ``max_crops``, whole tracks drawn at random (a track's crops stay together)."""
    if len(crops) <= max_crops:
        return list(crops)
    groups: Dict[Any, List[UnlabelledCrop]] = {}
    for i, c in enumerate(crops):
        groups.setdefault(('track', c.track) if c.track is not None else ('crop', i), []).append(c)
    order = np.random.default_rng(seed).permutation(len(groups))
    keys, out = list(groups), []
    for i in order:
        if len(out) + len(groups[keys[i]]) <= max_crops:
            out += groups[keys[i]]
    _logger.info('adapting on %d of %d crops (--max-crops)', len(out), len(crops))
    return out


def adapt(cfg: AdaptConfig, crops: Optional[Sequence[UnlabelledCrop]] = None, progress: bool = True,
          on_progress: Optional[ProgressCallback] = None) -> RunSummary:
    """Adapt ``cfg.weight_path`` to ``crops`` (default: those under ``cfg.data_dir``) without labels; writes
    ``<run_dir>/adapted.safetensors`` and ``adapt.json``. Reports each epoch to ``on_progress`` (True from it stops
    the run: :class:`Cancelled`); raises :class:`AdaptFailed` when the clustering failed."""
    set_seed(cfg.seed)
    device = torch.device(cfg.device)
    if crops is None:
        if cfg.data_dir is None:
            raise ValueError('nothing to adapt to: give --data-dir (a folder of crops) or the gallery\'s crops')
        crops = load_unlabelled(Path(cfg.data_dir), cfg.folder_tracks)
    crops = _limit(crops, cfg.max_crops, cfg.seed)
    if not cfg.tracks:
        crops = [replace(c, track=None) for c in crops]
    if len(crops) < 2 * cfg.instances:
        raise ValueError(f'{len(crops)} crops: too few to adapt to (want at least {2 * cfg.instances})')
    model = load_model(cfg.weight_path).to(device)
    _, start_extra = read_metadata(cfg.weight_path) if cfg.weight_path.endswith('.safetensors') else (None, {})
    teacher = (load_model(cfg.teacher_path).to(device) if cfg.teacher_path else copy.deepcopy(model)).eval()
    teacher.requires_grad_(False)
    if cfg.teacher_path and (teacher.embedding_dim, tuple(teacher.img_size)) != (model.embedding_dim,
                                                                                 tuple(model.img_size)):
        raise ValueError(f'teacher_path: a {teacher.embedding_dim}-dim embedding of {tuple(teacher.img_size)} '
                         f'images; the model to adapt has a {model.embedding_dim}-dim one of {tuple(model.img_size)}')
    records = [ImageRecord(c.path, 0, c.camid) for c in crops]
    tracks = [c.track for c in crops]
    cannot_link = co_occurring_tracks(crops) if cfg.tracks else set()
    settings = RecipeSettings(erasing=0.0, paste=0.0, crop_pad=cfg.crop_pad, instances=cfg.instances, triplet=0.0,
                              triplet_margin=0.3, label_smoothing=0.0, warmup_epochs=0, cosine=False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
    history: List[Dict[str, Any]] = []
    check = load_dataset(Path(cfg.check_dir)) if cfg.check_dir else None  # read once, scored every epoch
    before = check_scores(model, check, cfg.batch_size, device) if check is not None else None
    if before is not None:
        _logger.info('check set before adapting: mAP %.2f, rank-1 %.2f', before['mAP'], before['rank1'])
    labels = memory = loader = None
    stats: Dict[str, float] = {}
    for epoch in tqdm(range(cfg.epochs), desc='adapt', unit='epoch', disable=not progress):
        if epoch % cfg.cluster_every == 0 and (labels is None or not cfg.teacher_path):  # a teacher's: fixed
            features, _, _ = extract_features(teacher if cfg.teacher_path else model, records, cfg.batch_size,
                                              device=device, progress=False)
            clustering = pseudo_labels(features, tracks, cannot_link, cfg.eps, cfg.min_samples, cfg.k1, cfg.k2,
                                       [r.camid for r in records] if cfg.camera_centring else None)
            stats, labels = clustering.stats, clustering.labels
            reason = clustering_failure(stats, cfg.min_clustered, cfg.max_cluster_share)
            if reason is not None:
                raise AdaptFailed(f'epoch {epoch + 1}: {reason}; no model written')
            memory = torch.from_numpy(_centres(features, labels)).to(device)
            kept = [replace(r, pid=int(label)) for r, label in zip(records, labels) if label >= 0]
            loader = make_loader(kept, model.img_size, cfg.batch_size, train=True, num_workers=cfg.num_workers,
                                 seed=cfg.seed, settings=settings)
        loader.generator.manual_seed(cfg.seed + epoch)
        losses = _train_epoch(model, teacher, loader, memory, optimizer, cfg, device, progress)
        metrics: Dict[str, Any] = dict(losses, **stats)
        if check is not None:
            metrics.update({f'check_{k}': v for k, v in check_scores(model, check, cfg.batch_size,
                                                                     device).items()})
        metrics['epoch'] = epoch + 1
        history.append(metrics)
        _logger.info('adapt epoch %d: %s', epoch + 1, {k: round(v, 4) if isinstance(v, float) else v
                                                        for k, v in metrics.items()})
        if on_progress is not None:
            shown = {k: v for k, v in metrics.items() if k != 'epoch'}
            if before is not None:  # the page shows the check set before and now from the first epoch on
                shown.update({f'check_before_{k}': v for k, v in before.items()})
            report = Progress('adapt', (epoch + 1) / cfg.epochs, shown,
                              dict(epoch=epoch + 1, epochs=cfg.epochs))
            if on_progress(report):
                raise Cancelled(f'adaptation cancelled after epoch {epoch + 1}')
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / 'adapted.safetensors'
    extra = {k: v for k, v in start_extra.items() if k not in _STALE_EXTRA}
    final = dict(history[-1]) if history else {}
    final.pop('epoch', None)
    if before is not None:
        final.update({f'check_before_{k}': v for k, v in before.items()})
    extra.update(cfg.extra, adapted=dict(from_checkpoint=cfg.weight_path, crops=len(crops), epochs=cfg.epochs,
                                         tracks=cfg.tracks, teacher=cfg.teacher_path), metrics=final)
    if check is not None:  # the answers' scores mean P(same person) again, fitted on the new embedding
        extra.update(calibrate_model(model.eval(), (check.query, check.gallery), cfg.batch_size, device))
    else:
        _logger.warning('no --check-dir: the adapted model has no score calibration; the service answers cosines')
    save_checkpoint(model, out, extra)
    summary = RunSummary(checkpoint=str(out), history=history, metrics=final,
                         details=dict(config=cfg.model_dump(mode='json', exclude={'extra'}), crops=len(crops),
                                      cannot_link=len(cannot_link)))
    if cfg.int8:
        from .export import export_int8_calibrated
        summary.details['int8'] = str(export_int8_calibrated(out, records, seed=cfg.seed))
    (run_dir / 'adapt.json').write_text(json.dumps(asdict(summary), indent=2, default=str))
    return summary


def _train_epoch(model, teacher, loader, memory: torch.Tensor, optimizer: torch.optim.Optimizer, cfg: AdaptConfig,
                 device: torch.device, progress: bool) -> Dict[str, float]:
    """One pass: contrastive loss against the cluster memory (+ distillation from the starting model); the memory
    follows each batch's features (momentum update, unit norm)."""
    model.train()
    total, contrast_sum, distill_sum = 0, 0.0, 0.0
    for x, y, _ in tqdm(loader, desc='batches', unit='batch', leave=False, disable=not progress):
        x, y = x.to(device), y.to(device)
        embedding = model.embed(x)
        contrast = F.cross_entropy(embedding @ memory.T / cfg.temperature, y)
        loss = contrast
        distill = torch.zeros(())
        if cfg.distill:
            with torch.no_grad():
                target = teacher.embed(x)
            distill = (1 - (embedding * target).sum(1)).mean()
            loss = loss + cfg.distill * distill
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            sums = torch.zeros_like(memory).index_add_(0, y, embedding.detach())
            seen = torch.unique(y)
            memory[seen] = F.normalize(cfg.momentum * memory[seen] + (1 - cfg.momentum) * F.normalize(sums[seen], dim=1),
                                       dim=1)
        total += len(y)
        contrast_sum += contrast.item() * len(y)
        distill_sum += distill.item() * len(y)
    return dict(loss=contrast_sum / max(total, 1), distill_loss=distill_sum / max(total, 1))
