"""One writer per output: an exclusive lock file beside what a process writes.

`fcntl.flock` on `<target>.lock`, which holds the holder's process id. The kernel drops the
lock when its holder ends, however it ends (even `kill -9`), so a lock file left behind by a
killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from affectexp.errors import UserInputError

# How long a refused process waits for the holder to write its pid: the holder writes it just
# after taking the lock, so an empty file means it is between those two steps.
_PID_WAIT_S = 1.0


class LockHeld(UserInputError):
    """Another process is writing the same output."""

    def __init__(self, message: str, pid: int | None, lock_path: Path):
        super().__init__(message)
        self.pid = pid
        self.lock_path = lock_path


def lock_path_of(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike, key: str) -> Iterator[Path]:
    """Hold `<target>.lock` for the with block; yields the lock file's path.

    Creates target's missing folders and removes those it created if they are empty when the
    block ends (a run that stopped before writing leaves nothing behind). Raises LockHeld,
    naming the other process and the lock file, when another process holds it, and
    UserInputError naming the folder when it cannot be written; `key` is the config key that
    chose `target` (named in both messages).
    """
    target = Path(target)
    lock_path = lock_path_of(target)
    created = _make_folders(target.parent, key)
    try:
        descriptor = _acquire(lock_path, target, key)
        try:
            try:
                os.ftruncate(descriptor, 0)
                os.write(descriptor, f"{os.getpid()}\n".encode())
            except OSError as error:  # a full disk refuses even these few bytes
                raise _unwritable(lock_path.parent, error, key) from None
            yield lock_path
        finally:
            # Removed while still held: _acquire checks that the file it locked is still the
            # one at lock_path, so a process that opened it just before this unlink retries.
            lock_path.unlink(missing_ok=True)
            os.close(descriptor)
    finally:
        _remove_empty(created)


def _make_folders(folder: Path, key: str) -> list[Path]:
    """Create `folder` and its missing parents; returns those created, outermost first."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_empty(missing)  # the part of the chain made before the failure
        raise _unwritable(missing[0].parent if missing else folder, error, key) from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (outermost first), innermost first, each only if empty."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):  # not empty (something was written there) or never made
            folder.rmdir()


def _acquire(lock_path: Path, target: Path, key: str) -> int:
    while True:
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise _unwritable(lock_path.parent, error, key) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(descriptor)
            os.close(descriptor)
            holder = f"process {pid}" if pid is not None else "another process"
            raise LockHeld(
                f"{key}: {target} is being written by {holder} (lock file {lock_path}); wait for it to end, "
                f"or choose another {key}", pid, lock_path,
            ) from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)  # the previous holder removed the file after we opened it: take the new one


def _holder_pid(descriptor: int) -> int | None:
    deadline = time.monotonic() + _PID_WAIT_S
    while True:
        text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _unwritable(folder: Path, error: OSError, key: str) -> UserInputError:
    reason = error.strerror or errno.errorcode.get(error.errno or 0, str(error))
    return UserInputError(f"{key}: cannot write in {folder} ({reason}); choose a {key} in a folder you can write to, "
                          "or make that folder writable")
