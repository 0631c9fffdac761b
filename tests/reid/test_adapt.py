"""Unsupervised adaptation: pseudo-labels on hand-made features, what tracks force, the label-free failure checks,
and a tiny run end to end with its check set scored as `evaluate` scores it."""
import json

import numpy as np
import pytest
import torch

from models.checkpoints import load_model, read_metadata, save_checkpoint
from models.la_transformer import create_model
from reid.adapt import AdaptConfig, AdaptFailed, adapt, clustering_failure, co_occurring_tracks, pseudo_labels
from reid.datasets import UnlabelledCrop, load_dataset, load_unlabelled
from reid.engine import evaluate_model
from reid.synthetic import SynthConfig, generate_dataset

D = 32


def tight_group(rng, axis, n, spread=0.05):
    f = np.zeros((n, D))
    f[:, axis] = 1
    f += rng.normal(0, spread, f.shape)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


@pytest.fixture
def two_groups_and_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(6, D))
    return np.vstack([tight_group(rng, 0, 10), tight_group(rng, 1, 10), noise / np.linalg.norm(noise, axis=1,
                                                                                                keepdims=True)])


def test_two_tight_groups_become_two_pseudo_identities_and_noise_is_left_out(two_groups_and_noise):
    pl = pseudo_labels(two_groups_and_noise, eps=0.6, min_samples=4, k1=6, k2=2)
    a, b, noise = pl.labels[:10], pl.labels[10:20], pl.labels[20:]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0] and min(a[0], b[0]) >= 0
    assert (noise == -1).all()
    assert pl.stats['clusters'] == 2 and pl.stats['unclustered'] == pytest.approx(6 / 26)
    assert pl.stats['largest_cluster'] == pytest.approx(0.5) and pl.stats['cannot_link_splits'] == 0


def test_a_track_is_never_split_and_a_lone_track_is_its_own_pseudo_identity(two_groups_and_noise):
    tracks = [None] * 26
    for i in (0, 1, 10, 11):  # a tracker's id switch: two crops of each group in one track
        tracks[i] = 7
    tracks[20] = tracks[21] = 8  # two noise crops one track: nothing else looks like them
    pl = pseudo_labels(two_groups_and_noise, tracks, eps=0.6, min_samples=4, k1=6, k2=2)
    assert len({pl.labels[i] for i in (0, 1, 10, 11)}) == 1 and pl.labels[0] >= 0
    assert pl.labels[20] == pl.labels[21] >= 0 and pl.labels[20] not in set(pl.labels[:20])
    assert not set(pl.labels[22:]) & set(pl.labels[:20])  # the other noise joins neither group
    assert pl.stats['tracks'] == 2 and 0 <= pl.stats['track_agreement'] <= 1


def test_tracks_one_camera_saw_at_once_are_never_one_pseudo_identity():
    rng = np.random.default_rng(1)
    look = tight_group(rng, 0, 12)  # six tracks of two crops that all look alike
    tracks = [i // 2 for i in range(12)]
    free = pseudo_labels(look, tracks, eps=0.6, min_samples=4, k1=6, k2=1)
    assert len(set(free.labels)) == 1  # alike, and nothing says they differ: one person
    apart = pseudo_labels(look, tracks, [(0, 1), (2, 3)], eps=0.6, min_samples=4, k1=6, k2=1)
    label = {t: apart.labels[2 * t] for t in range(6)}
    assert label[0] != label[1] and label[2] != label[3]
    assert apart.stats['cannot_link_splits'] >= 1
    assert all(apart.labels[2 * t] == apart.labels[2 * t + 1] for t in range(6))  # and still no track split


def test_co_occurring_tracks_by_camera_and_time():
    crops = [UnlabelledCrop('a', 1, 1, 0.0, 10.0), UnlabelledCrop('b', 1, 1, 5.0, 12.0),  # track 1: 0..12
             UnlabelledCrop('c', 1, 2, 11.0, 20.0),  # overlaps track 1
             UnlabelledCrop('d', 1, 3, 20.0, 30.0),  # touches track 2 at 20: not at once
             UnlabelledCrop('e', 2, 4, 0.0, 30.0),  # another camera
             UnlabelledCrop('f', 1), UnlabelledCrop('g', 1, 5)]  # no track; a track without times
    assert co_occurring_tracks(crops) == {(1, 2)}


def test_failed_clusterings_are_named():
    ok = dict(unclustered=0.2, clusters=5, largest_cluster=0.3)
    assert clustering_failure(ok, 0.1, 0.5) is None
    assert 'nearly everything unclustered' in clustering_failure(dict(ok, unclustered=0.95), 0.1, 0.5)
    assert 'giant cluster' in clustering_failure(dict(ok, largest_cluster=0.8), 0.1, 0.5)
    assert 'nothing to tell apart' in clustering_failure(dict(ok, clusters=1), 0.1, 0.5)


def test_unlabelled_folders(tmp_path):
    from PIL import Image
    for name in ('t1/0001_c2s1_000101_01.jpg', 't1/0001_c2s1_000201_01.jpg', 't2/x_c5.png', 't2/plain.jpg'):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new('RGB', (8, 16)).save(tmp_path / name)
    crops = load_unlabelled(tmp_path, folder_tracks=True)
    assert [(c.camid, c.track) for c in crops] == [(2, 0), (2, 0), (0, 1), (5, 1)]
    assert all(c.track is None for c in load_unlabelled(tmp_path))


@pytest.fixture(scope='module')
def two_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp('sites')
    cfg = dict(num_ids=12, num_cams=3, imgs_per_id=8, junk=2, distractors=2)
    generate_dataset(root / 'a', SynthConfig(**cfg), progress=False)
    generate_dataset(root / 'b', SynthConfig(**cfg, site=1), progress=False)
    torch.manual_seed(0)
    model = create_model('amg_vit_tiny_patch16_224', img_size=(64, 32), num_classes=6)
    save_checkpoint(model, root / 'start.safetensors', dict(min_score=0.4, dataset='site a'))
    return root


def test_a_site_is_another_installation(two_sites):
    from PIL import Image

    def mean_colour(site):
        return np.mean([np.asarray(Image.open(r.path), dtype=np.float32).mean((0, 1))
                        for r in load_dataset(two_sites / site).train], axis=0)
    assert np.abs(mean_colour('a') - mean_colour('b')).max() > 10  # its own light and colour cast


def test_tiny_adaptation_scores_its_check_set_like_evaluate(two_sites, tmp_path):
    start = two_sites / 'start.safetensors'
    check = load_dataset(two_sites / 'b')
    cfg = AdaptConfig(weight_path=str(start), data_dir=str(two_sites / 'b'), check_dir=str(two_sites / 'b'),
                      output_dir=str(tmp_path), epochs=2, eps=0.5, k1=6, min_samples=2, batch_size=16,
                      max_cluster_share=1.0)
    events = []
    s = adapt(cfg, progress=False, on_progress=lambda e: events.append(e) and False)
    assert [e.info['epoch'] for e in events] == [1, 2] and events[-1].progress == 1.0
    expected_before = evaluate_model(load_model(start), check.query, check.gallery, protocols=('standard',),
                                     progress=False)['standard']
    assert s.metrics['check_before_mAP'] == pytest.approx(expected_before['mAP'])
    adapted = load_model(s.checkpoint)
    after = evaluate_model(adapted, check.query, check.gallery, protocols=('standard',), progress=False)['standard']
    assert s.metrics['check_mAP'] == pytest.approx(after['mAP'], abs=1e-6)
    assert any((p1 - p0).abs().max() > 0 for p0, p1 in zip(load_model(start).parameters(), adapted.parameters()))
    _, extra = read_metadata(s.checkpoint)
    assert extra['dataset'] == 'site a' and extra['adapted']['from_checkpoint'] == str(start)
    assert extra.get('min_score') != 0.4  # the old calibration does not describe the new embedding
    assert {'clusters', 'unclustered', 'largest_cluster'} <= set(s.history[0])
    assert json.loads((tmp_path / 'adapted' / 'adapt.json').read_text())['checkpoint'] == s.checkpoint


def test_a_failed_clustering_ends_the_run_without_a_model(two_sites, tmp_path):
    from PIL import Image
    for i in range(16):  # nobody to tell apart: the same crop sixteen times
        Image.new('RGB', (32, 64), (90, 90, 90)).save(tmp_path / f'{i}.jpg')
    cfg = AdaptConfig(weight_path=str(two_sites / 'start.safetensors'), data_dir=str(tmp_path),
                      output_dir=str(tmp_path / 'runs'), epochs=1, k1=6, batch_size=16)
    with pytest.raises(AdaptFailed, match='nothing to tell apart'):
        adapt(cfg, progress=False)
    assert not (tmp_path / 'runs' / 'adapted' / 'adapted.safetensors').exists()


def test_a_teacher_gives_the_clusters_and_the_distillation_targets(two_sites, tmp_path, monkeypatch):
    """Adapting a (pruned) model with another (the adapted unpruned) as its teacher: clusters from the teacher's
    features, fixed, and the student drawn to the teacher's embeddings; a teacher of another shape is refused."""
    from reid.datasets import ImageRecord
    from reid.engine import extract_features
    torch.manual_seed(1)
    teacher = save_checkpoint(create_model('amg_vit_tiny_patch16_224', img_size=(64, 32), num_classes=6),
                              tmp_path / 'teacher.safetensors')
    start = two_sites / 'start.safetensors'
    unlabelled = load_unlabelled(two_sites / 'b')
    assert all(c.track is None for c in unlabelled)
    crops = [ImageRecord(c.path, 0, c.camid) for c in unlabelled]
    cfg = AdaptConfig(weight_path=str(start), teacher_path=str(teacher), data_dir=str(two_sites / 'b'),
                      output_dir=str(tmp_path), epochs=2, eps=0.5, k1=6, min_samples=2, batch_size=16,
                      max_cluster_share=1.0, distill=20.0, lr=3e-4)

    def agreement(path):  # mean cosine of each crop's embedding with the teacher's
        f = [extract_features(load_model(p).eval(), crops, 16, progress=False)[0] for p in (path, teacher)]
        return float(np.mean(np.sum(f[0] * f[1], axis=1)))
    import reid.adapt
    clusterings = []
    monkeypatch.setattr(reid.adapt, 'pseudo_labels', lambda *args, **kw: clusterings.append(1) or pseudo_labels(
        *args, **kw))
    s = adapt(cfg, unlabelled, progress=False)
    assert len(clusterings) == 1 and len(s.history) == 2  # the teacher's clusters do not change: clustered once
    teacher_clusters = pseudo_labels(extract_features(load_model(teacher).eval(), crops, 16, progress=False)[0],
                                     [None] * len(crops), set(), 0.5, 2, 6, 6,
                                     [r.camid for r in crops]).stats
    for epoch in s.history:  # the teacher's clusters, every epoch the same
        assert all(epoch[k] == pytest.approx(v) for k, v in teacher_clusters.items() if k in epoch)
    assert agreement(s.checkpoint) > agreement(start) + 0.01
    assert read_metadata(s.checkpoint)[1]['adapted']['teacher'] == str(teacher)
    other = save_checkpoint(create_model('amg_vit_tiny_patch16_224', img_size=(128, 64), num_classes=6),
                            tmp_path / 'other.safetensors')
    with pytest.raises(ValueError, match='teacher_path'):
        adapt(cfg.model_copy(update=dict(teacher_path=str(other), name='other')), unlabelled, progress=False)
