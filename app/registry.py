"""Checkpoints as the service knows them: a model row per file (with its calibrated threshold and complexity), and
the ONNX export beside it."""
import logging
from pathlib import Path
from typing import Dict, Optional

from models.onnx_backend import file_sha256, onnx_path_for, onnx_status
from models.records import read_metadata
from storage import crud
from storage.db import ModelVersion

__all__ = ['register_checkpoint', 'ensure_onnx']

_logger = logging.getLogger(__name__)
RECORDED = ('complexity', 'metrics', 'pruned_from', 'score_calibration')  # what a model row keeps of the record


def register_checkpoint(session, path: str, name: str = '', info: Optional[Dict] = None) -> ModelVersion:
    """A model row for a checkpoint file, with its calibrated threshold, score calibration and complexity from the
    file's record."""
    _, extra = read_metadata(path)
    return crud.add_model(session=session, path=str(Path(path).resolve()), name=name, sha256=file_sha256(path),
                          min_score=extra.get('min_score'), info=dict(info or {}, **{
                              k: extra[k] for k in RECORDED if k in extra}))


def ensure_onnx(checkpoint: str, checkpoint_sha256: Optional[str] = None) -> bool:
    """Export ``checkpoint`` to ONNX beside it unless a fresh export exists (told by the record beside it: no onnx
    import, no parse); False (logged) when export fails. ``checkpoint_sha256``: the model row's, where known."""
    if onnx_status(onnx_path_for(checkpoint), checkpoint, checkpoint_sha256)[0]:
        return True
    try:
        from models.checkpoints import load_model  # torch: only to export, never to serve an export
        from models.export import export_onnx
        export_onnx(load_model(checkpoint), onnx_path_for(checkpoint),
                    checkpoint_sha256=checkpoint_sha256 or file_sha256(checkpoint))
        return True
    except Exception:  # the service then runs eager torch
        _logger.exception('ONNX export of %s failed; serving with eager torch', checkpoint)
        return False
