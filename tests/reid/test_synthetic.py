import json
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.datasets import HIDDEN_BANDS, OCCLUDER_RECORD, DatasetError, load_dataset
from reid.synthetic import (OCCLUDER_KINDS, SynthConfig, draw_person_image, generate_dataset, hidden_by_band,
                            sample_identity)


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


def test_hidden_by_band_is_the_share_of_each_bands_figure_under_the_occluder():
    figure = np.zeros((8, 4), bool)
    figure[2:8, 1:3] = True  # 2 figure pixels per row from row 2
    occluder = np.zeros((8, 4), bool)
    occluder[5:, :] = True  # rows 5-7 hidden whole
    occluder[:, 2] = True  # and column 2 (half of each figure row)
    assert hidden_by_band(figure, occluder, bands=4).tolist() == [0.0, 0.5, 0.75, 1.0]


@pytest.mark.parametrize('kind', OCCLUDER_KINDS)
def test_the_generator_records_which_rows_each_occluder_kind_hides(kind, monkeypatch):
    import reid.synthetic as synth
    monkeypatch.setattr(synth, 'OCCLUDER_KINDS', (kind,))  # every occluder of this kind
    cam = synth.sample_camera(0, 1)
    for i in range(6):
        _, covered, hidden = draw_person_image(sample_identity(0, 3 + i), cam, np.random.default_rng(i), occlude=True,
                                               occlusion=(0.2, 0.4))
        assert hidden.shape == (HIDDEN_BANDS,) and ((0 <= hidden) & (hidden <= 1)).all()
        seen = np.flatnonzero(hidden > 0)
        assert len(seen) and covered >= 0.2
        if kind in ('car', 'box'):  # rising from below: nothing hidden above its top, all of the figure below it
            below = hidden[seen[0] + 1:]
            assert (below[below > 0] > 0.95).all() and hidden[:seen[0]].max(initial=0) == 0
        if kind == 'board':  # from a side: a share of every row from its top to the feet, never a whole row
            assert hidden.max() < 1
        # the covered share is the bands' shares weighted by the figure: never above the largest
        assert hidden.max() >= covered - 1e-6


def test_occluded_datasets_record_their_occluders_for_the_reader(tmp_path):
    generate_dataset(tmp_path, SynthConfig(num_ids=8, num_cams=2, imgs_per_id=4, occluded=True, occluded_train=0.5,
                                           junk=1, distractors=1, seed=2), progress=False)
    record = json.loads((tmp_path / OCCLUDER_RECORD).read_text())
    ds = load_dataset(tmp_path)
    assert all(r.hidden is not None for r in ds.query)  # every query occluded
    occluded_train = [r for r in ds.train if r.hidden is not None]
    assert 0 < len(occluded_train) < len(ds.train)
    assert len(record) == len(ds.query) + len(occluded_train) + sum(r.hidden is not None for r in ds.gallery)
    for r in ds.query + ds.train:
        key = f'{Path(r.path).parent.name}/{Path(r.path).name}'
        assert r.hidden == (tuple(record[key]) if key in record else None)
    # a broken record is refused by name
    (tmp_path / OCCLUDER_RECORD).write_text(json.dumps({next(iter(record)): [2.0] * HIDDEN_BANDS}))
    with pytest.raises(DatasetError, match='occluders.json'):
        load_dataset(tmp_path)
