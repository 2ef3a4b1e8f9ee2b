"""File modes of what lema_hub writes: temp files and folders end with the umask's modes, not 0600/0700."""

from __future__ import annotations

import os


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give a `mkstemp` file (0600) or `mkdtemp` folder (0700) the mode a plain open/mkdir would have.

    Artifacts are read by other users (a demo container under another uid), so they get
    0666/0777 minus the umask like every other file, not the temp-file defaults.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())
