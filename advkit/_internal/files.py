"""One run per output folder: an exclusive OS file lock on ``OUT/.advkit.lock``.

Two runs writing one ``--out`` would mix their records (two evaluations append
to one progress log under the same keys; two trainings overwrite each other's
checkpoints). The lock is an advisory ``flock`` (``msvcrt.locking`` on Windows)
on a file inside the folder: the operating system releases it when the process
exits, also on ``kill -9``, so a stale lock never blocks a rerun. The lock file
holds the holder's process id and command, for the refusal message.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from advkit._internal.errors import UserError

LOCK_NAME = ".advkit.lock"
_HELD: dict[str, "OutputLock"] = {}  # resolved folder -> lock held by this process


class OutputLock:
    """An exclusive lock on one output folder, held until :meth:`release` or the process ends."""

    def __init__(self, folder: Path, fd: int):
        self.folder, self.fd, self.count = folder, fd, 1

    def release(self) -> None:
        self.count -= 1
        if self.count > 0 or self.fd < 0:
            return
        _HELD.pop(str(self.folder), None)
        _unlock(self.fd)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def lock_output(folder, what: str = "--out") -> OutputLock:
    """Take the lock of ``folder`` (created if needed) or refuse with one line naming the holder.

    Re-entrant within one process (an engine called from another engine's run).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = str(folder.resolve())
        if key in _HELD:
            _HELD[key].count += 1
            return _HELD[key]
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from None
    if not _try_lock(fd):
        holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{what} {folder} is in use by another advkit run ({holder}); wait for it to end "
                        f"or choose another {what}")
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}".encode())
    except OSError:
        pass  # the lock holds; only the note for the refusal message is missing
    lock = _HELD[key] = OutputLock(Path(key), fd)
    return lock


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(folder: Path, exc: OSError) -> str:
    """Why ``folder`` could not be made: a file in its place (``mkdir`` says only "File exists"), or the error."""
    for part in (folder, *folder.parents):
        if part.exists():
            return f"{part} is a file, not a folder" if not part.is_dir() else (exc.strerror or str(exc))
    return exc.strerror or str(exc)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, with the mode the umask gives
    a new file (``mkstemp`` alone would make it readable by its owner only). The temporary file
    carries the writer's process id: one left by a killed writer is removed by the next write of
    ``path``. A full disk or an unwritable folder is one :class:`UserError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {_reason(path.parent, exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    sweep_stale(path)


def sweep_stale(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` whose writer process is gone (killed mid-write)."""
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never sweep
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())
