"""Resident memory of a benchmark's process and the worker processes it starts."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def rss_mb(pid: str = "self", field: str = "VmRSS") -> float:
    """A /proc status memory figure of a process, MB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children() -> list[str]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:  # a thread that ended since the listing
            pass
    return pids


class PeakMemory(threading.Thread):
    """Samples this process's and its children's (the workers') resident memory every 20 ms.

    ru_maxrss is no use here: Linux carries the forking process's peak across exec.
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.total_mb, self.worker_mb, self.running = 0.0, 0.0, True

    def run(self) -> None:
        while self.running:
            workers = [rss_mb(pid) for pid in children()]
            self.worker_mb = max([self.worker_mb, *workers])
            self.total_mb = max(self.total_mb, rss_mb() + sum(workers))
            time.sleep(0.02)

    def stop(self) -> "PeakMemory":
        """Stop sampling; this process's own peak (VmHWM) counts towards total_mb too."""
        self.running = False
        self.join()
        self.total_mb = max(self.total_mb, rss_mb(field="VmHWM"))
        return self
