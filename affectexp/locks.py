"""One writer at a time: an exclusive lock on a file, held for as long as a process writes.

The kernel releases an `fcntl.flock` lock when its holder exits, however it exits
(`kill -9` included), so a lock never outlives a crashed writer and needs no cleaning.
The holder writes its pid into the file, so the process that is refused can name it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from affectexp.errors import UserInputError


class Locked(UserInputError):
    """Another process holds the lock: it is writing the same run or cache."""


@contextmanager
def exclusive(lock_path: Path, what: str, blocking: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if needed) while inside.

    what: what the lock protects, for the message ("MLflow run of this config in runs/ab12").
    blocking: wait for the holder instead of raising Locked at once.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise Locked(f"{lock_path}: another process (pid {holder}) is writing the {what}; wait for it to end "
                         "or stop it, then rerun") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
