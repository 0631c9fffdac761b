import shutil

import pytest

from models.embedder import ImageError
from reid.data import ImageDataset, split_validation
from reid.datasets import DatasetError, ImageRecord, load_dataset, parse_market_name
from reid.prepare import build_occluded_duke, market_to_imagefolder


def test_market_names():
    assert parse_market_name('0002_c1s1_000451_03.jpg') == (2, 1)
    assert parse_market_name('-1_c3s2_000000_00.jpg') == (-1, 3)
    assert parse_market_name('0005_c2_f0046182.jpg') == (5, 2)  # DukeMTMC style
    with pytest.raises(DatasetError, match='pattern'):
        parse_market_name('person.jpg')


def test_market_layout(synth_root):
    ds = load_dataset(synth_root)
    assert ds.layout == 'market'
    assert sorted({r.pid for r in ds.train}) == list(range(ds.num_train_pids))  # relabelled
    assert ds.num_train_pids == 6
    gallery_pids = {r.pid for r in ds.gallery}
    assert -1 in gallery_pids and 0 in gallery_pids  # junk and distractors are read
    assert {r.pid for r in ds.query} <= gallery_pids
    assert all(r.camid in (1, 2, 3) for r in ds.query + ds.gallery)


def test_imagefolder_layout_round_trip(synth_root, tmp_path):
    counts = market_to_imagefolder(synth_root, tmp_path / 'if', progress=False)
    ds, raw = load_dataset(tmp_path / 'if'), load_dataset(synth_root)
    assert ds.layout == 'imagefolder'
    assert counts['gallery'] == len([r for r in raw.gallery if r.pid != -1])
    assert sorted((r.pid, r.camid) for r in ds.query) == sorted((r.pid, r.camid) for r in raw.query)
    assert ds.num_train_pids == raw.num_train_pids


def test_dataset_flag_finds_subfolder(synth_root, tmp_path):
    shutil.copytree(synth_root, tmp_path / 'market1501')
    assert load_dataset(tmp_path, 'market').root == tmp_path / 'market1501'


def test_missing_and_broken_datasets_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / 'nowhere')):
        load_dataset(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetError, match='not a Re-ID dataset'):
        load_dataset(tmp_path / 'empty')
    (tmp_path / 'half' / 'bounding_box_train').mkdir(parents=True)
    with pytest.raises(DatasetError, match='bounding_box_test'):
        load_dataset(tmp_path / 'half')


def test_corrupt_image_names_the_file(synth_root, tmp_path):
    bad = tmp_path / '0001_c1s1_000001_01.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 truncated')
    ds = ImageDataset([ImageRecord(str(bad), 0, 1)], (64, 32))
    with pytest.raises(ImageError, match='0001_c1s1_000001_01.jpg'):
        ds[0]


def test_validation_split_holds_out_whole_identities(synth_root):
    train = load_dataset(synth_root).train
    kept, (vq, vg) = split_validation(train, 0.34, seed=0)
    assert len(kept) + len(vq) + len(vg) == len(train)
    assert sorted({r.pid for r in kept}) == list(range(len({r.pid for r in kept})))
    assert {r.pid for r in vq} == {r.pid for r in vg}
    assert len({(r.pid, r.camid) for r in vq}) == len(vq)  # one query per identity and camera


def test_occluded_duke_from_zip_and_lists(tmp_path, synth_root):
    import zipfile
    files = sorted((synth_root / 'bounding_box_train').glob('*.jpg'))[:3]
    test_files = sorted((synth_root / 'bounding_box_test').glob('0*.jpg'))[:3]
    with zipfile.ZipFile(tmp_path / 'DukeMTMC-reID.zip', 'w') as z:
        for f in files:
            z.write(f, f'DukeMTMC-reID/bounding_box_train/{f.name}')
        for f in test_files:
            z.write(f, f'DukeMTMC-reID/bounding_box_test/{f.name}')
    lists = tmp_path / 'lists'
    lists.mkdir()
    (lists / 'train.list').write_text('\n'.join(f'bounding_box_train/{f.name}' for f in files))
    (lists / 'gallery.list').write_text(f'bounding_box_test/{test_files[0].name}\n')
    # a query listed under query/ that the zip only has in bounding_box_test
    (lists / 'query.list').write_text(f'query/{test_files[1].name}\n')
    counts = build_occluded_duke(tmp_path / 'DukeMTMC-reID.zip', lists, tmp_path / 'od', progress=False)
    assert counts == {'train': 3, 'gallery': 1, 'query': 1}
    assert (tmp_path / 'od' / 'query' / test_files[1].name).read_bytes() == test_files[1].read_bytes()
    (lists / 'query.list').write_text('query/9999_c1_f0000001.jpg\n')
    with pytest.raises(DatasetError, match='9999_c1_f0000001.jpg'):
        build_occluded_duke(tmp_path / 'DukeMTMC-reID.zip', lists, tmp_path / 'od2', progress=False)
