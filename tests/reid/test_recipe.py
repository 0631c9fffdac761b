"""The strong recipe's parts, each against what it promises; and the LA recipe's training step, bit for bit."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.transforms import ResizeNormalize
from reid.data import ImageDataset, make_loader
from reid.datasets import HIDDEN_BANDS, ImageRecord, load_dataset
from reid.engine import TrainConfig, part_ce_loss, recipe_step, train_one_epoch
from reid.recipe import (ERASING_SCALE, PASTE_AREA, IdentitySampler, Recipe, batch_hard_triplet_loss,
                         paste_occluders, visibility_targets)
from tests.conftest import tiny_model


def test_paste_changes_pixels_only_inside_a_bottom_or_side_strip_of_the_stated_area():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 16)
    before = x.clone()
    y = torch.arange(64) % 8
    out, boxes = paste_occluders(x, y, prob=0.5)
    assert torch.equal(x, before)  # the input is left alone
    pasted = [b for b in boxes if b is not None]
    assert 15 <= len(pasted) <= 50
    for i, box in enumerate(boxes):
        changed = (out[i] != x[i]).any(0)
        if box is None:
            assert not changed.any()
            continue
        t, left, b, r = box
        inside = torch.zeros_like(changed)
        inside[t:b, left:r] = True
        assert not (changed & ~inside).any()  # nothing outside the box
        assert changed[inside].float().mean() > 0.99  # another image's pixels inside it
        assert (b == 32 and left == 0 and r == 16) or (t == 0 and b == 32 and (left == 0 or r == 16))
        share = (b - t) * (r - left) / (32 * 16)
        assert PASTE_AREA[0] - 1 / 16 <= share <= PASTE_AREA[1] + 1 / 16
        # the strip comes from an image of another identity, at the same place
        sources = [j for j in range(64) if y[j] != y[i] and torch.equal(out[i, :, t:b, left:r], x[j, :, t:b, left:r])]
        assert sources


def test_random_erasing_stays_within_its_area_and_the_dataset_records_its_rows(tmp_path):
    half = np.random.default_rng(0).integers(0, 256, (128, 32, 3), dtype=np.uint8)
    image = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))  # mirror-symmetric: flips change nothing
    image.save(tmp_path / '0001_c1s1_000001_01.png')
    settings = TrainConfig(data_dir='x', erasing=1.0, crop_pad=0).recipe_settings()
    dataset = ImageDataset([ImageRecord(str(tmp_path / '0001_c1s1_000001_01.png'), 0, 1)], (128, 64), train=True,
                           settings=settings)
    plain = ResizeNormalize((128, 64))(image)
    torch.manual_seed(0)
    for _ in range(20):
        out, _, hidden = dataset[0]
        changed = (out != plain).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = out[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == 0).all()  # one rectangle of the mean colour, nothing changed outside it
        share = box[0].numel() / (128 * 64)
        assert ERASING_SCALE[0] * 0.9 <= share <= ERASING_SCALE[1] * 1.1
        # the label: per band of 4 rows, the share of the band's area erased
        expected = [((changed[4 * k:4 * k + 4].sum()) / (4 * 64)).item() for k in range(HIDDEN_BANDS)]
        assert hidden.tolist() == pytest.approx(expected, abs=1e-6)


def test_recorded_occluders_and_the_pasted_strip_combine_into_the_targets():
    # 64 rows, 4 parts; the record hides the last 8 of 32 bands whole (the last part) and half of band 0; the pasted
    # strip hides the right quarter of every row: visible shares multiply
    hidden = torch.zeros(1, 32)
    hidden[0, 24:] = 1.0
    hidden[0, 0] = 0.5
    t = visibility_targets([(0, 24, 64, 32)], 64, 32, 4, hidden)
    assert t[0].tolist() == pytest.approx([0.75 * (1 - 0.5 / 8), 0.75, 0.75, 0.0])
    # 14 parts over 32 bands: a part's share is its rows' mean, bands cut at part edges
    t14 = visibility_targets([None], 224, 224, 14, hidden)
    assert t14[0, -1] == 0 and t14[0, 0] == pytest.approx(1 - 0.5 * 14 / 32) and (t14[0, 2:10] == 1).all()


def test_identity_sampler_yields_p_identities_times_k_images():
    labels = [i // 7 for i in range(70)] + [10, 10]  # 10 identities of 7 images, one of 2
    sampler = IdentitySampler(labels, batch_size=16, instances=4, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 72 // 16
    for batch in batches:
        assert len(batch) == 16
        counts = {}
        for i in batch:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        assert sorted(counts.values()) == [4, 4, 4, 4]
        for label in counts:
            if label != 10:  # with 7 images there is no need to repeat one
                assert len({i for i in batch if labels[i] == label}) == 4
    again = list(IdentitySampler(labels, 16, 4, torch.Generator().manual_seed(0)))
    assert again == batches


def test_batch_hard_triplet_equals_brute_force():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(12, 5), dim=1)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])  # identity 4 has no positive: not an anchor
    margin = 0.3
    losses = []
    for a in range(12):
        pos = [p for p in range(12) if p != a and y[p] == y[a]]
        neg = [n for n in range(12) if y[n] != y[a]]
        if not pos:
            continue
        d = lambda i, j: float(torch.linalg.vector_norm(emb[i] - emb[j]))  # noqa: E731
        losses.append(max(0.0, max(d(a, p) for p in pos) - min(d(a, n) for n in neg) + margin))
    assert batch_hard_triplet_loss(emb, y, margin).item() == pytest.approx(np.mean(losses), abs=1e-5)
    emb.requires_grad_(True)
    batch_hard_triplet_loss(emb, y, margin).backward()
    assert torch.isfinite(emb.grad).all()


def test_recipe_options_switch_off_and_validate():
    strong = TrainConfig(data_dir='x').recipe_settings()
    assert strong.paste > 0 and strong.triplet > 0 and strong.instances >= 2 and strong.cosine
    assert TrainConfig(data_dir='x', erasing=0.5).recipe_settings().erasing == 0.5
    off = TrainConfig(data_dir='x', erasing=0, paste=0, triplet=0, instances=0).recipe_settings()
    assert (off.erasing, off.paste, off.triplet, off.instances) == (0, 0, 0, 0)
    la = TrainConfig(data_dir='x', recipe='la').recipe_settings()
    assert not any([la.erasing, la.paste, la.crop_pad, la.instances, la.triplet, la.label_smoothing, la.cosine])
    with pytest.raises(ValueError, match='instances'):
        TrainConfig(data_dir='x', instances=1).recipe_settings()


def _seed_style_step(model, x, y, optimizer):
    """The training step as it was before recipes existed (LA-Transformer's)."""
    logits = model.forward_logits(x)
    B, P, C = logits.shape
    loss = F.cross_entropy(logits.reshape(B * P, C), y.repeat_interleave(P), reduction='mean') * P
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def test_la_recipe_reproduces_the_seed_training_step_bit_for_bit(synth_root):
    ds = load_dataset(synth_root)
    labels = {p: i for i, p in enumerate(sorted({r.pid for r in ds.train}))}
    records = [type(r)(r.path, labels[r.pid], r.camid) for r in ds.train]
    settings = TrainConfig(data_dir='x', recipe=Recipe.LA).recipe_settings()
    ours, theirs = tiny_model(num_classes=len(labels)), tiny_model(num_classes=len(labels))
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-3)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    torch.manual_seed(5)
    train_one_epoch(ours, make_loader(records, (64, 32), 8, train=True, seed=3, settings=settings), opt_ours,
                    torch.device('cpu'), recipe_step(settings), progress=False)
    torch.manual_seed(5)
    theirs.train()
    for x, y, _ in make_loader(records, (64, 32), 8, train=True, seed=3):  # flips only, as before
        _seed_style_step(theirs, x, y, opt_theirs)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    logits = torch.randn(4, 3, 5)
    y = torch.tensor([0, 1, 2, 4])
    assert torch.equal(part_ce_loss(logits, y), part_ce_loss(logits, y, 0.0))


def test_strong_step_adds_the_triplet_loss(synth_root):
    settings = TrainConfig(data_dir='x', paste=0, triplet=2.0).recipe_settings()
    model = tiny_model(num_classes=4).train()
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 64, 32), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    torch.manual_seed(1)
    loss, logits = recipe_step(settings)(model, x, y)
    torch.manual_seed(1)
    logits2, emb, _ = model.forward_train(x)
    expected = part_ce_loss(logits2, y, settings.label_smoothing) + 2.0 * batch_hard_triplet_loss(emb, y, 0.3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_identity_batches_reach_training(synth_root):
    ds = load_dataset(synth_root)
    settings = TrainConfig(data_dir='x').recipe_settings()
    loader = make_loader(ds.train, (64, 32), 8, train=True, settings=settings)
    for _, y, _ in itertools.islice(loader, 3):
        assert len(y) == 8 and sorted(torch.bincount(y)[torch.bincount(y) > 0].tolist()) == [4, 4]


def test_visibility_targets_are_the_share_of_each_part_the_strip_leaves():
    from reid.recipe import visibility_targets
    # 64 x 32 pixels, 4 parts of 16 rows: a bottom strip from row 40 (the last part whole, the third half), a side
    # strip over the right 8 columns (a quarter of every row), and no strip
    t = visibility_targets([(40, 0, 64, 32), (0, 24, 64, 32), None], 64, 32, 4)
    assert t.tolist() == [[1.0, 1.0, 0.5, 0.0], [0.75] * 4, [1.0] * 4]


def test_the_visibility_loss_learns_which_rows_the_pasted_strips_hide():
    from reid.recipe import paste_occluders, visibility_targets
    torch.manual_seed(0)
    model = tiny_model(num_classes=4, visibility=True).train()
    settings = TrainConfig(data_dir='x', paste=1.0, visibility=1.0, triplet=0, instances=0).recipe_settings()
    x, y = torch.randn(16, 3, 64, 32), torch.arange(16) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    step = recipe_step(settings)
    for _ in range(60):
        loss, _ = step(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    g = torch.Generator().manual_seed(5)
    pasted, boxes = paste_occluders(x, y, 1.0, generator=g)
    with torch.no_grad():
        p = model.visibility(pasted)
    target = visibility_targets(boxes, 64, 32, 4)
    hidden, seen = p[target < 0.3], p[target > 0.9]
    assert len(hidden) and len(seen) and hidden.mean() < seen.mean() - 0.2, (hidden.mean(), seen.mean())


def test_a_model_without_the_head_trains_and_records_as_before():
    model = tiny_model(num_classes=4)
    assert not model.has_visibility and model.architecture()['visibility'] is False
    assert not any('visibility' in n for n, _ in model.named_parameters())
    x = torch.randn(2, 3, 64, 32)
    assert model.forward_train(x)[2] is None


def test_part_losses_weighted_by_visibility_ask_nothing_of_a_hidden_part():
    torch.manual_seed(0)
    logits, y = torch.randn(2, 3, 5), torch.tensor([1, 4])
    ce = torch.stack([torch.stack([F.cross_entropy(logits[b, p][None], y[b][None]) for p in range(3)])
                      for b in range(2)])
    assert torch.isclose(part_ce_loss(logits, y), ce.sum(1).mean())  # unweighted: as before
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0]])  # the last part hidden in both images
    want = (ce * weights / weights.mean()).mean() * 3
    assert torch.isclose(part_ce_loss(logits, y, weights=weights), want)
    moved = logits.clone()
    moved[:, 2] = torch.randn(2, 5) * 10  # what a hidden part's classifier says changes nothing
    assert torch.isclose(part_ce_loss(moved, y, weights=weights), want)


def test_the_strong_recipe_trains_the_head_where_something_hides_a_part(synth_root, tmp_path):
    from models.checkpoints import load_model
    from reid.engine import train
    assert TrainConfig(data_dir='x').recipe_settings().visibility == 1.0  # on by default (measured to help)
    assert TrainConfig(data_dir='x', recipe='la').recipe_settings().visibility == 0.0

    def run(name, **kw):
        cfg = TrainConfig(data_dir=str(synth_root), name=name, output_dir=str(tmp_path), img_size=(64, 32), epochs=1,
                          batch_size=8, val_fraction=0, **kw)
        return load_model(train(cfg, progress=False).checkpoint)
    assert run('default').has_visibility  # the pasted strips hide parts: the head learns from them
    # nothing hides a part (synth_root records no occluders): the default trains without it, an explicit ask fails
    assert not run('no-paste', paste=0).has_visibility
    with pytest.raises(ValueError, match='nothing to learn from'):
        run('asked', paste=0, visibility=1.0)
