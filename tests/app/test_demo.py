"""make demo serves the fastest export whose accuracy holds, and says why."""
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
