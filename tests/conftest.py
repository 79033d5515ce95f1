"""Shared fixtures: one tiny synthetic data set, one cache and one trained run per test session."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import affectexp.config  # noqa: F401  (registers the config schemas)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Small enough to generate and train in seconds, large enough to learn the expressions.
TRAIN_PER_CLASS = 150
TEST_PER_CLASS = 30
FACE_SIZE = 48


def compose_config(config_name: str, root: Path, overrides: list[str] = ()):
    """The entry config as the CLI would compose it, with every path under `root`."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=[f"paths.root={root}", *overrides])


def synthetic_overrides(data_root: Path) -> list[str]:
    return [
        f"dataset.root={data_root}",
        f"dataset.train_per_class={TRAIN_PER_CLASS}",
        f"dataset.test_per_class={TEST_PER_CLASS}",
        f"cache.size={FACE_SIZE}",
    ]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A synthetic AffectNet-format data set, generated once per test session."""
    from affectexp.data.synthetic import generate_affectnet

    root = tmp_path_factory.mktemp("synthetic")
    generate_affectnet(root, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=0, num_workers=2)
    return root


@pytest.fixture(scope="session")
def cache_config(synthetic_root, tmp_path_factory):
    """Config of the shared 48 px, 5-class cache built from synthetic_root."""
    workspace = tmp_path_factory.mktemp("workspace")
    return compose_config("preprocess", workspace, synthetic_overrides(synthetic_root))


@pytest.fixture(scope="session")
def built_cache(cache_config):
    """(summary, config) of the shared cache, built once."""
    from affectexp.tasks.preprocess import run_preprocess

    return run_preprocess(cache_config), cache_config


# The shared training run: a tiny CNN, a few epochs on the shared cache.
EPOCHS = 8
TINY_MODEL = ["model.widths=[16,32,64]", "model.dense_units=64", "model.dropout=0.3"]


def train_config(cache_cfg, overrides: list[str] = ()):
    """train.py's config for the shared cache (its workspace as paths.root), tiny model, EPOCHS epochs."""
    root = Path(cache_cfg.paths.root)
    return compose_config("train", root, ["cache.size=48", f"trainer.epochs={EPOCHS}", *TINY_MODEL, *overrides])


@pytest.fixture(scope="session")
def trained(built_cache):
    """(objective, config, MLflow run) of one short training run on the shared cache."""
    from mlflow.tracking import MlflowClient

    from affectexp.tasks.train import train

    cfg = train_config(built_cache[1], ["logger.run_name=e2e"])
    objective = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'e2e'")
    return objective, cfg, run


def default_ctrl_c() -> None:
    """Popen's preexec_fn for tests that press Ctrl-C: the child gets SIGINT's default action and
    an unblocked SIGINT, as a terminal starts a command, whatever this test process (whose
    in-process runs start worker pools) holds for SIGINT at that moment."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def worker_pids(pid: int | str = "self") -> set[int]:
    """The multiprocessing workers that process `pid` started (not its resource tracker)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids.update(int(child) for child in (task / "children").read_text().split())
    return {child for child in pids if b"spawn_main" in read_cmdline(child)}


def read_cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_until_ended(pids: set[int], seconds: float = 20.0) -> set[int]:
    """Those of `pids` still running after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(running(pid) for pid in pids):
        time.sleep(0.05)
    return {pid for pid in pids if running(pid)}


def wait_until_stopped(process: subprocess.Popen, stop_at: str) -> None:
    """Block until train.py has stopped itself at `stop_at` (or fail if it ended first).

    waitid reports the child's stop itself, so nothing polls; WNOWAIT leaves its later exit
    to Popen.wait.
    """
    info = os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
    if info.si_code != os.CLD_STOPPED:
        process.wait()
        raise AssertionError(f"train.py ended (exit {process.returncode}) before reaching {stop_at}: "
                             f"{process.stdout.read().decode()[-2000:]}")


def pytest_collection_modifyitems(items):
    """Mark the tests that need the session's synthetic data set, so that `-m "not synthetic"`
    runs the ones that start in a second (mutation testing runs those for every mutant)."""
    for item in items:
        if "synthetic_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.synthetic)
