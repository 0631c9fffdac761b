"""ONNX Runtime execution of an exported embedding (``amg-reid export``), with a freshness check.

An export records the SHA-256 of the checkpoint it came from; an ``.onnx`` whose hash does not match the checkpoint
(stale) or that cannot be read (corrupt) is never used.
"""
import logging
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .export import file_sha256

__all__ = ['OnnxEmbedding', 'onnx_status', 'onnx_path_for']

_logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


def onnx_path_for(checkpoint: PathLike) -> Path:
    return Path(checkpoint).with_suffix('.onnx')


def onnx_status(onnx_path: PathLike, checkpoint: PathLike) -> Tuple[bool, str]:
    """(usable, reason): the file exists, parses, and was exported from this very checkpoint."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        return False, f'{onnx_path} does not exist'
    try:
        import onnx
        model = onnx.load(str(onnx_path), load_external_data=False)
    except ImportError:
        return False, 'the onnx package is not installed'
    except Exception as e:  # onnx raises DecodeError and others for damaged files
        return False, f'{onnx_path} is corrupt ({e.__class__.__name__})'
    recorded = {p.key: p.value for p in model.metadata_props}.get('amg_reid.checkpoint_sha256')
    if recorded != file_sha256(checkpoint):
        return False, f'{onnx_path} is stale: it was exported from another version of {Path(checkpoint).name}'
    return True, 'fresh'


class OnnxEmbedding:
    """``images (B, 3, H, W) float32 -> embeddings (B, D)`` through ONNX Runtime on the CPU."""

    def __init__(self, onnx_path: PathLike, threads: Optional[int] = None, spin: bool = True) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # spinning: pool threads busy-wait for the next run; fastest back to back, but in a service they burn the
        # cores the request threads and the index search need between runs (docs/benchmarks.md, bench.load)
        options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spin else '0')
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
