import json

import pytest

from app.cli import main


def test_synth_train_evaluate_complexity(tmp_path, capsys):
    data = tmp_path / 'data'
    assert main(['synth', str(data), '--ids', '8', '--cams', '2', '--imgs-per-id', '4', '--junk', '1',
                 '--distractors', '1']) == 0
    assert main(['train', '--data-dir', str(data), '--img-size', '64', '32', '--epochs', '1', '--batch-size', '8',
                 '--name', 'cli', '--output-dir', str(tmp_path / 'runs'), '--val-fraction', '0',
                 '--visibility', '0']) == 0
    ckpt = tmp_path / 'runs' / 'cli' / 'best.safetensors'
    assert ckpt.exists()
    out = tmp_path / 'eval.json'
    assert main(['evaluate', '--data-dir', str(data), '--weight-path', str(ckpt), '--json', str(out),
                 '--visualize', str(tmp_path / 'vis')]) == 0
    ranked = sorted((tmp_path / 'vis' / 'ranked').glob('*.png'))
    assert ranked and (tmp_path / 'vis' / 'cmc.png').stat().st_size > 1000
    from PIL import Image
    assert Image.open(ranked[0]).size[0] > 10 * 64  # the query and its top 10
    results = json.loads(out.read_text())
    assert set(results) == {'standard', 'legacy'} and 0 <= results['standard']['mAP'] <= 100
    printed = capsys.readouterr().out
    assert printed.index('standard Market-1501 protocol') < printed.index('legacy protocol')
    assert main(['complexity']) == 0
    assert '1.226 G' in capsys.readouterr().out
    # a model without the visibility head cannot score by visibility: a clear exit, not a traceback
    assert main(['evaluate', '--data-dir', str(data), '--weight-path', str(ckpt), '--visibility']) == 2
    assert 'visibility head' in capsys.readouterr().err
    # one trained with it (the strong recipe's default) can (1 epoch: speed, not accuracy)
    assert main(['train', '--data-dir', str(data), '--img-size', '64', '32', '--epochs', '1', '--batch-size', '8',
                 '--output-dir', str(tmp_path / 'runs'), '--name', 'vis', '--val-fraction', '0']) == 0
    assert main(['evaluate', '--data-dir', str(data), '--weight-path', str(tmp_path / 'runs' / 'vis' /
                 'best.safetensors'), '--visibility', '--protocol', 'standard']) == 0


def test_clear_errors_exit_2(tmp_path, capsys):
    assert main(['evaluate', '--data-dir', str(tmp_path / 'missing')]) == 2
    assert f'dataset folder not found: {tmp_path / "missing"}' in capsys.readouterr().err
    assert main(['evaluate', '--data-dir', str(tmp_path), '--weight-path', str(tmp_path / 'x.safetensors')]) == 2
    assert 'not a Re-ID dataset' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['train', '--model'])
