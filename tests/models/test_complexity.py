import pytest

from models.complexity import msa_params, real_macs, seed_flops
from models.la_transformer import create_model


def test_seed_convention_unpruned():
    tiny = create_model('amg_vit_tiny_patch16_224')
    assert msa_params(tiny) / 1e6 == pytest.approx(1.78, abs=0.005)
    assert seed_flops(tiny) / 1e9 == pytest.approx(1.226, abs=0.0005)
    base = create_model('amg_vit_base_patch16_224')
    assert msa_params(base) / 1e6 == pytest.approx(28.35, abs=0.005)
    assert seed_flops(base) / 1e9 == pytest.approx(17.45, abs=0.005)


def test_seed_convention_pruned_configs():
    # the seed's table: tiny with one head per block (head 67%): 0.597M MSA params, 0.873 GFLOPs
    tiny_head67 = create_model('amg_vit_tiny_patch16_224', num_heads=1)
    assert msa_params(tiny_head67) / 1e6 == pytest.approx(0.597, abs=0.0005)
    assert seed_flops(tiny_head67) / 1e9 == pytest.approx(0.873, abs=0.0005)
    # base with 108 heads (9 per block): 21.27M
    assert msa_params(create_model('amg_vit_base_patch16_224', num_heads=9)) / 1e6 == pytest.approx(21.27, abs=0.005)


def test_real_count_matches_analytic_macs():
    model = create_model('amg_vit_tiny_patch16_224', depth=1, img_size=(32, 32), num_heads=2,
                         kv_index=[[0, 1, 3]])
    N, K, d, A = 5, 3, 192, 128
    patch = 4 * d * 3 * 16 * 16  # 4 patches, each a 3x16x16 -> d projection
    attn = N * d * A + K * d * 2 * A + N * K * A * 2 + N * A * d
    mlp = 2 * N * d * 4 * d
    assert real_macs(model) == patch + attn + mlp
