import json
import hashlib

import numpy as np
import pytest
from PIL import Image

from reid.datasets import load_dataset
from reid.synthetic import SynthConfig, generate_dataset, sample_identity


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob('*.jpg')):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path):
    cfg = SynthConfig(num_ids=6, num_cams=2, imgs_per_id=4, junk=1, distractors=1, seed=3)
    generate_dataset(tmp_path / 'a', cfg, progress=False)
    generate_dataset(tmp_path / 'b', cfg, progress=False)
    generate_dataset(tmp_path / 'c', SynthConfig(**{**cfg.__dict__, 'seed': 4}), progress=False)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b') != _digest(tmp_path / 'c')


def test_market_layout_and_disjoint_identities(synth_root):
    ds = load_dataset(synth_root)
    train_files = {p.name for p in (synth_root / 'bounding_box_train').iterdir()}
    raw_train_pids = {int(n.split('_')[0]) for n in train_files}
    test_pids = {r.pid for r in ds.query}
    assert raw_train_pids.isdisjoint(test_pids)
    im = Image.open(ds.query[0].path)
    assert im.size == (64, 128) and im.format == 'JPEG'
    # each query's identity appears in the gallery under another camera
    for q in ds.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)


def test_identities_share_attributes_but_differ():
    looks = [sample_identity(0, pid) for pid in range(1, 41)]
    keys = ('upper', 'lower', 'shoes', 'hair', 'skin', 'bag', 'pattern')
    shared = [sum(a[k] == b[k] for k in keys) for i, a in enumerate(looks) for b in looks[i + 1:]]
    assert np.mean(np.array(shared) >= 2) > 0.5  # most pairs share several attributes
    assert len({tuple(str(a[k]) for k in keys + ('height',)) for a in looks}) == len(looks)


def test_occluded_queries_differ_from_plain(tmp_path):
    base = dict(num_ids=4, num_cams=2, imgs_per_id=4, junk=0, distractors=0, seed=5)
    generate_dataset(tmp_path / 'plain', SynthConfig(**base), progress=False)
    generate_dataset(tmp_path / 'occ', SynthConfig(**base, occluded=True), progress=False)
    plain = sorted((tmp_path / 'plain' / 'query').glob('*.jpg'))
    occ = sorted((tmp_path / 'occ' / 'query').glob('*.jpg'))
    assert [p.name for p in plain] == [p.name for p in occ]
    diffs = [np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float)).mean()
             for a, b in zip(plain, occ)]
    assert min(diffs) > 5  # every query is occluded


def test_occlusion_extent_is_a_setting(tmp_path):
    def queries(extent):
        root = tmp_path / f'occ-{extent[0]}-{extent[1]}'
        generate_dataset(root, SynthConfig(num_ids=8, num_cams=2, imgs_per_id=4, occluded=True, occlusion=extent,
                                           junk=0, distractors=0, seed=3), progress=False)
        return [np.asarray(Image.open(q), dtype=np.float32) for q in sorted((root / 'query').iterdir())]

    # the same random draws for every extent: occluders differ only in size, the people behind them not at all
    none, light, heavy = queries((0.0, 0.0)), queries((0.05, 0.1)), queries((0.6, 0.7))
    changed = lambda imgs: np.mean([np.abs(a - b).mean() for a, b in zip(imgs, none)])  # noqa: E731
    assert changed(heavy) > 2 * changed(light) > 0
    with pytest.raises(ValueError, match='occlusion'):
        generate_dataset(tmp_path / 'bad', SynthConfig(occluded=True, occlusion=(0.5, 0.2)), progress=False)


def test_occluders_hide_the_stated_share_of_the_figure(tmp_path):
    generate_dataset(tmp_path, SynthConfig(num_ids=12, num_cams=3, imgs_per_id=6, occluded=True, occlusion=(0.15, 0.35),
                                           occluded_train=1.0, junk=0, distractors=0, seed=5), progress=False)
    stats = json.loads((tmp_path / 'synth.json').read_text())['occluded_share_of_figure']
    counts = json.loads((tmp_path / 'synth.json').read_text())['counts']
    assert stats['query']['images'] == counts['query']  # every query occluded
    assert stats['bounding_box_train']['images'] == counts['bounding_box_train']  # occluded_train=1.0
    for split in stats.values():
        # measured on the drawn figure: at least the minimum, never the whole person
        assert 0.15 <= split['min'] <= split['median'] <= split['max'] <= 0.45
