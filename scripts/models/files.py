"""Writing files so that a server polling the directory never sees half a file."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, data):
    """Write bytes to path via a temporary file in the same directory + rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
