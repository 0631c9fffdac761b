"""make demo serves the fastest export whose accuracy holds, and says why; its recordings are cameras after the
dataset's."""
from pathlib import Path

import pytest

from app import demo
from app.demo import MAX_MAP_LOSS, choose_backend


def test_the_fastest_export_within_the_accuracy_margin_is_served():
    candidates = {'onnx': dict(precision='fp32', mAP=50.0, ips_b1=300.0),
                  'onnx-int8': dict(precision='int8', mAP=50.0 - MAX_MAP_LOSS - 0.1, ips_b1=900.0),  # too lossy
                  'openvino': dict(precision='bf16', mAP=49.7, ips_b1=450.0)}
    backend, why = choose_backend(candidates)
    assert backend == 'openvino'
    assert why.startswith('fastest here at batch 1: 450 img/s against ONNX Runtime fp32 300, ONNX Runtime int8 900')
    assert 'onnx-int8 lost more than 0.5 mAP' in why and why.endswith('(mAP 49.70)')


def test_fp32_is_served_when_nothing_beats_it():
    candidates = {'onnx': dict(precision='fp32', mAP=50.0, ips_b1=300.0),
                  'onnx-int8': dict(precision='int8', mAP=50.1, ips_b1=280.0)}
    backend, why = choose_backend(candidates)
    assert backend == 'onnx' and 'lost' not in why


def test_the_demo_recordings_are_drawn_once_on_cameras_after_the_datasets(tmp_path, monkeypatch):
    for module in ('av', 'cv2'):
        pytest.importorskip(module, reason='the video extra is not installed')
    from app.ingest import IngestParams
    monkeypatch.setattr(demo, 'DEMO_VIDEO', dict(demo.DEMO_VIDEO, seconds=1.0, size=(128, 96)))  # the same, tiny
    bodies = demo.demo_recordings(tmp_path)
    cams = demo.DEMO_DATA.num_cams
    assert [b['camera_id'] for b in bodies] == list(range(cams + 1, cams + 1 + demo.DEMO_VIDEO['num_cams']))
    for body in bodies:
        IngestParams(**body)  # what POST /v1/admin/videos takes
        assert Path(body['video_path']).is_file() and Path(body['boxes_path']).is_file()
    drawn = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert demo.demo_recordings(tmp_path) == bodies
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == drawn  # not drawn again
