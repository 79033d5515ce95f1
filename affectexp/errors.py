"""Errors caused by the user's input (files, config): reported as one line, no traceback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class UserInputError(Exception):
    """Bad input that the user can fix; its message names the file, row or config key."""


class ConfigError(UserInputError, ValueError):
    """A config value that type checking cannot catch (an unknown name, an impossible combination)."""


# The messages exit_on_user_error reported in this process, for whoever records why it stopped
# (a sweep's parent run, tasks/sweep.py).
REPORTED: list[str] = []


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserInputError into a one-line message and exit status 1.

    SystemExit passes through Hydra's job runner, which would otherwise print a traceback.
    """
    try:
        yield
    except UserInputError as error:
        if not logging.getLogger().handlers:  # before Hydra has configured logging: its format
            logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        logging.getLogger("affectexp").error("%s", error)
        REPORTED.append(str(error))
        raise SystemExit(1) from None


# A process ended by SIGINT exits with 128 + 2, as shells report it.
INTERRUPTED_STATUS = 130


@contextlib.contextmanager
def exit_on_interrupt(advice: str = "rerun the same command to continue") -> Iterator[None]:
    """Turn Ctrl-C (KeyboardInterrupt) into one line, "interrupted; <advice>", and exit status 130.

    For entry points whose rerun continues where the interrupted run stopped; what the
    interrupted code cleans up (its `finally` blocks) has run by the time the line is written.
    """
    try:
        yield
    except KeyboardInterrupt:
        logging.getLogger("affectexp").error("interrupted; %s", advice)
        raise SystemExit(INTERRUPTED_STATUS) from None
