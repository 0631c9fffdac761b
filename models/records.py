"""What our ``.safetensors`` checkpoints record in their header, read without torch (the service registers and
serves exported models in a process that never imports it). Writing is :func:`models.checkpoints.save_checkpoint`."""
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from safetensors import safe_open

__all__ = ['ARCH_KEY', 'EXTRA_KEY', 'read_metadata', 'CheckpointError']

ARCH_KEY = 'amg_reid.architecture'
EXTRA_KEY = 'amg_reid.extra'


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the requested model."""


def read_metadata(path: Union[str, Path]) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """(architecture record or None, extra dict) of a ``.safetensors`` file."""
    with safe_open(str(path), framework='numpy') as f:  # the header only: no tensor is read
        meta = f.metadata() or {}
    arch = json.loads(meta[ARCH_KEY]) if ARCH_KEY in meta else None
    return arch, json.loads(meta.get(EXTRA_KEY, '{}'))
