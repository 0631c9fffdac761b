import torch

from models.checkpoints import load_model, save_checkpoint
from models.complexity import seed_flops
from tests.conftest import tiny_model

X = torch.randn(2, 3, 64, 32)  # 4x2 patches: positions 1..8, rows {1,2} {3,4} {5,6} {7,8}


def test_dropping_nothing_changes_nothing():
    model = tiny_model(depth=3).eval()
    with torch.no_grad():
        before = model.embed(X)
        model.set_token_keep([None, list(range(9)), None])
        assert torch.allclose(model.embed(X), before, atol=1e-6)


def test_dropped_tokens_leave_the_sequence_and_rows_pool_survivors():
    model = tiny_model(depth=2).eval()
    keep = [0, 1, 2, 5, 8]  # row 1 (positions 3, 4) loses every token
    with torch.no_grad():
        x = model.patch_embed(X)
        x = torch.cat([model.cls_token.expand(2, -1, -1), x], 1) + model.pos_embed
        x = model.blocks[0](x)
        x = model.norm(model.blocks[1](x[:, keep]))
        rows = torch.stack([x[:, 1:3].mean(1), x[:, 0], x[:, 3], x[:, 4]], 1)  # emptied row -> CLS
        expected = torch.cat([torch.nn.functional.normalize(r, dim=-1) / 2 for r in rows.unbind(1)], 1)
        model.set_token_keep([None, keep])
        assert model.sequence_positions() == [list(range(9)), keep]
        assert torch.allclose(model.embed(X), expected, atol=1e-5)


def test_fused_token_is_the_running_mean_of_dropped_tokens():
    model = tiny_model(depth=3).eval()
    model.set_token_keep([None, [0, 1, 2, 3, 4, 5], [0, 1, 2]], fuse=True)
    assert model.sequence_positions()[2] == [0, 1, 2, -1]
    with torch.no_grad():
        x = model.patch_embed(X)
        x = torch.cat([model.cls_token.expand(2, -1, -1), x], 1) + model.pos_embed
        x = model.blocks[0](x)
        fused = x[:, 6:9].mean(1, keepdim=True)
        x = model.blocks[1](torch.cat([x[:, :6], fused], 1))
        fused = (x[:, 3:6].sum(1) + x[:, 6] * 3) / 6
        x = model.norm(model.blocks[2](torch.cat([x[:, :3], fused[:, None]], 1)))
        assert torch.allclose(model.forward_features(X), x, atol=1e-5)


def test_round_trip_and_flops_of_a_dropping_model(tmp_path):
    model = tiny_model(depth=3)
    model.set_token_keep([None, [0, 1, 3, 5, 7], [0, 3]], fuse=True)
    loaded = load_model(save_checkpoint(model, tmp_path / 'drop.safetensors'))
    assert loaded.token_keep == model.token_keep and loaded.fuse_dropped
    with torch.no_grad():
        assert torch.equal(loaded.eval().embed(X), model.eval().embed(X))
    full = tiny_model(depth=3)
    assert seed_flops(model) < seed_flops(full)
