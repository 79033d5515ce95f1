"""Helpers for the worker processes that preprocessing and training start."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Iterator


def exit_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it is gone.

    A pool's workers wait on a queue whose write end they hold themselves, so after a
    `kill -9` of the parent they would wait forever (measured: spawned pool workers
    outlived their killed parent). Call it from the pool's initializer.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait_for_parent() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=wait_for_parent, name="exit-with-parent", daemon=True).start()


def run_when_idle() -> None:
    """Lower this process's CPU priority so that it runs only on cores nothing else wants.

    Linux: the SCHED_IDLE policy, which any ordinary process preempts at once; elsewhere
    the lowest nice value.
    """
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


# Names a moment at which this process stops itself (SIGSTOP), so that a test can kill it
# exactly there with `kill -9`: "epoch_committed:1", "evaluated:val", ... (see stop_point calls).
STOP_AT_ENV = "AFFECTEXP_STOP_AT"


def stop_point(name: str) -> None:
    """Freeze this process here when AFFECTEXP_STOP_AT names this moment.

    Kill tests need the process at a chosen moment (between an epoch's commit and its
    metrics, say), which no sleep reaches reliably on a loaded machine; a stopped process
    waits there until it is killed (or continued with SIGCONT). Unset, it costs one lookup.
    """
    if os.environ.get(STOP_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)


@contextlib.contextmanager
def children_ignore_interrupts() -> Iterator[None]:
    """Start processes inside this block with Ctrl-C (SIGINT) ignored from their first instruction.

    Ctrl-C in a terminal reaches every process of the foreground group: each worker would
    print its own KeyboardInterrupt traceback while the parent, which alone decides what to
    keep, cleans up and ends them. An ignored SIGINT survives exec and Python leaves it
    ignored, so spawned workers are covered while they import, before any initializer runs.
    This process ignores it too for the block (measured: 40 ms for a pool of two).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can be set from the main thread only: children started elsewhere keep the default
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
