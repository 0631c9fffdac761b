"""Content-addressed image files: ``<root>/<sha[:2]>/<sha>.<ext>``, written atomically, never outside ``root``."""
import hashlib
import os
from pathlib import Path
from typing import Tuple

__all__ = ['ImageStore']


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str, ext: str) -> Path:
        if len(sha256) != 64 or any(c not in '0123456789abcdef' for c in sha256) or ext not in ('jpg', 'png'):
            raise ValueError('invalid image key')
        return self.root / sha256[:2] / f'{sha256}.{ext}'

    def put(self, data: bytes, ext: str) -> Tuple[str, Path]:
        """Store bytes (idempotent for the same content); returns (sha256, path). The file is durable on return."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, ext)
        if path.exists():
            return sha, path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return sha, path

    def resolve(self, stored_path: str) -> Path:
        """A stored path, refused if it points outside the store."""
        path = Path(stored_path).resolve()
        if self.root not in path.parents:
            raise ValueError('image path outside the image store')
        return path
