"""Screenshots of the MLflow UI showing real runs of this project, taken in headless Chromium.

What it does, in a fresh temporary folder (``paths.root=<tmp>``, removed at the end unless
``--workdir`` is given):

1. ``preprocess.py``: a small cache of the embedded synthetic data set (60 faces a class, 24 px);
2. ``train.py``: one single run, a 2-job Hydra sweep (``-m optimizer.lr=1e-3,3e-3``) and a 2-trial
   KerasTuner search (``tuner=random tuner.max_trials=2``), all tiny (2 epochs of 3 steps) and all
   into one MLflow SQLite store;
3. starts ``mlflow ui --backend-store-uri sqlite:///...`` on a free local port, waits for its
   ``/health`` to answer, and in Chromium (Playwright) saves, under ``--out``:

   - ``runs-table.png``: the experiment's runs table, the sweep's and the search's parent rows
     expanded to show their children; as columns the params that differ between the runs and
     a few metrics (the attribute columns, empty or alike for these runs, are hidden);
   - ``compare.png`` and ``compare-details.png``: the compare view of every leaf run (selected
     with their checkboxes, then *Compare*): the top of the page, then the run details,
     parameters and metrics with *Show diff only*;
   - ``parent-run.png``: the search's parent run page.

The server is stopped on every way out (success, error, Ctrl-C, SIGTERM). Nothing here knows a
metric's or a param's name: parents and children are found through MLflow's own
``mlflow.parentRunId`` tag and rows by run id, and the columns are chosen from what the runs
logged (``--metrics`` and ``--params`` choose them by hand).

Run it (not part of ``make test``; about 4 minutes on 2 cores)::

    apt-get install -y chromium            # the browser: Debian's, never a downloaded build
    make screenshots                       # installs the `browser` extra into .venv, runs this
    .venv/bin/python tests/browser/mlflow_ui.py --out outputs/screenshots
    .venv/bin/python tests/browser/mlflow_ui.py --readme-image tests/browser/runs-table.png

``--workdir DIR --skip-training`` takes the screenshots again on the runs an earlier
``--workdir DIR`` run made (about a minute instead of four).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1400, "height": 800}
NAME_WIDTH = 480  # the run name column's widest, in pixels

# The network of the machines this runs on is closed: without these flags Chromium keeps
# retrying refused connections (updates, sync, QUIC probes) and can hang at start-up.
# --no-sandbox: Chromium's sandbox needs user namespaces, which containers and root lack.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Tiny on purpose: the point is what the UI shows, not the accuracy. 24 px faces, 60 per class.
DATA = ["cache.size=24", "dataset.train_per_class=60", "dataset.test_per_class=20"]
TRAIN = [
    *DATA,
    "trainer.epochs=2",
    "trainer.steps_per_epoch=3",
    "trainer.batch_size=16",
    "model.widths=[8,16,32]",
    "model.dense_units=32",
    "augmentation=none",
    "trainer.augment_workers=0",  # no augmenting processes to start for 3 steps
]

# The groups of the Columns menu, as the UI names them.
GROUPS = ("Attributes", "Metrics", "Parameters", "Tags", "Datasets")
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs: stable across our renames


class Failure(Exception):
    """A step that did not work; its message is printed as the script's last line."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/screenshots"),
                        help="folder for the PNG screenshots (default: outputs/screenshots)")
    parser.add_argument("--readme-image", type=Path, default=None,
                        help="also copy runs-table.png here (tests/browser/runs-table.png is the README's)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="paths.root of the runs, kept afterwards (default: a temporary folder, removed)")
    parser.add_argument("--skip-training", action="store_true",
                        help="use the runs already in --workdir's store instead of making new ones")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for preprocess.py, train.py and mlflow (default: this one)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium binary (default: Debian's)")
    parser.add_argument("--metrics", default="auto",
                        help="comma-separated metric columns of the runs table; auto: the first 3 "
                             "(by name) that every run has, parents included")
    parser.add_argument("--params", default="auto",
                        help="comma-separated param columns; auto: up to 3 params whose values differ "
                             "between the leaf runs (short values only)")
    parser.add_argument("--server-timeout", type=float, default=120.0,
                        help="seconds to wait for the MLflow UI's /health (default: 120)")
    args = parser.parse_args(argv)
    if args.skip_training and args.workdir is None:
        parser.error("--skip-training needs --workdir (the folder of the earlier runs)")
    return args


# ---------------------------------------------------------------------------------------------
# Prerequisites


def check_browser(chromium: str) -> None:
    """Fail with one line when Chromium or the Python driver is missing, before any training."""
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        raise Failure(f"chromium not found at {chromium}: install it with apt-get install chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise Failure("the Playwright driver is missing: pip install -e '.[browser]' (or: make screenshots)") from None


# ---------------------------------------------------------------------------------------------
# Runs


def run_step(title: str, command: list[str], cwd: Path, log: Path) -> None:
    """Runs one command to completion, its output into `log`; the log's tail is the error."""
    print(f"  {title} (log: {log})", flush=True)
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait()
        except BaseException:
            # Ctrl-C reaches the child through the terminal, SIGTERM only us: end it either way.
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise Failure(f"{title} failed (exit status {code}); end of {log}:\n{tail}")
    print(f"    done in {time.monotonic() - started:.0f} s", flush=True)


def make_runs(python: str, root: Path) -> None:
    """The runs to look at: one single run, a 2-job sweep and a 2-trial search, one store."""
    root_override = f"paths.root={root}"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # The scripts run from the workdir, so nothing lands in the checkout; they import this
    # checkout's affectexp because Python puts a script's own folder first on sys.path.
    preprocess, train = str(REPO / "preprocess.py"), str(REPO / "train.py")
    run_step("preprocess the synthetic data set", [python, preprocess, root_override, *DATA, "num_workers=1"],
             root, logs / "preprocess.log")
    run_step("one training run", [python, train, root_override, *TRAIN], root, logs / "single.log")
    run_step("a 2-job Hydra sweep", [python, train, "-m", "optimizer.lr=1e-3,3e-3", root_override, *TRAIN],
             root, logs / "sweep.log")
    run_step("a 2-trial KerasTuner search", [python, train, "tuner=random", "tuner.max_trials=2", root_override, *TRAIN],
             root, logs / "search.log")


@dataclass
class Store:
    """What the screenshots need to know of the store, read through MLflow's client."""

    experiment_id: str
    parents: dict[str, list[str]]  # parent run id -> its children's ids, in the order they ran
    singles: list[str]  # runs with neither parent nor children
    names: dict[str, str]  # run id -> run name
    metric_columns: list[str] = field(default_factory=list)
    param_columns: list[str] = field(default_factory=list)

    @property
    def leaves(self) -> list[str]:
        return [child for children in self.parents.values() for child in children] + self.singles


def read_store(tracking_uri: str, metrics: str, params: str) -> Store:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    # The experiment is the one holding the runs (its name is config, not ours to assume).
    runs_by_experiment = {e.experiment_id: client.search_runs([e.experiment_id], max_results=1000)
                          for e in client.search_experiments()}
    experiment_id = max(runs_by_experiment, key=lambda e: len(runs_by_experiment[e]))
    runs = sorted(runs_by_experiment[experiment_id], key=lambda r: r.info.start_time)
    by_id = {r.info.run_id: r for r in runs}
    parents: dict[str, list[str]] = {}
    for run in runs:
        parent = run.data.tags.get(PARENT_TAG)
        if parent:
            parents.setdefault(parent, []).append(run.info.run_id)
    singles = [r.info.run_id for r in runs if r.info.run_id not in parents and not r.data.tags.get(PARENT_TAG)]
    if len(parents) < 2 or any(len(c) < 2 for c in parents.values()) or not singles:
        raise Failure(f"expected a single run and two parents with two children each in {tracking_uri}; "
                      f"found {len(singles)} single runs and parents with {[len(c) for c in parents.values()]} children")
    store = Store(experiment_id, parents, singles, {r.info.run_id: r.info.run_name for r in runs})

    if metrics == "auto":
        # Metrics every run has, the parents' (their best child's) included: the columns
        # that read across the whole table.
        common = set.intersection(*(set(r.data.metrics) for r in runs))
        store.metric_columns = sorted(common)[:3]
    else:
        store.metric_columns = [m for m in metrics.split(",") if m]
    if params == "auto":
        leaves = [by_id[i].data.params for i in store.leaves]
        shared = set.intersection(*(set(p) for p in leaves))
        varying = [k for k in sorted(shared)
                   if len({p[k] for p in leaves}) > 1 and all(len(p[k]) <= 40 for p in leaves)]
        store.param_columns = varying[:3]
    else:
        store.param_columns = [p for p in params.split(",") if p]
    return store


# ---------------------------------------------------------------------------------------------
# The MLflow UI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(python: str, tracking_uri: str, cwd: Path, log: Path, timeout: float) -> Iterator[str]:
    """A real `mlflow ui` on a free local port, until the block is left whichever way.

    It gets a process group of its own so that stopping it also stops the workers it starts.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [python, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    print(f"  mlflow ui on {url} (log: {log})", flush=True)
    # The server's job runner (GenAI evaluation jobs) starts about ten consumer processes that
    # these pages never use; on a 2-core machine they only slow the UI's start.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_health(server, url, log, timeout)
        yield url
    finally:
        stop_group(server)


def wait_for_health(server: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
            raise Failure(f"mlflow ui exited with status {server.returncode} before answering; end of {log}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise Failure(f"mlflow ui did not answer {url}/health within {timeout:.0f} s (log: {log})")
        time.sleep(0.5)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after 15 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------------------------------------
# The browser


class Ui:
    """One Chromium page on the MLflow UI, with the few gestures the screenshots need."""

    def __init__(self, page, base_url: str, out: Path):
        self.page = page
        self.base_url = base_url
        self.out = out

    def shot(self, name: str) -> Path:
        path = self.out / name
        self.page.screenshot(path=str(path))
        print(f"  wrote {path}", flush=True)
        return path

    def clear_overlays(self) -> None:
        """Closes what a first visit opens over the page: a feature tour popover, the assistant panel.

        They are found by the design system's component ids and closed only when present, so
        a UI without them passes through.
        """
        for component in ("mlflow.detect_issues.guidance.got_it", "mlflow.assistant.chat_panel.close"):
            button = self.page.locator(f'[data-component-id="{component}"]')
            if button.count() and button.first.is_visible():
                with contextlib.suppress(Exception):
                    button.first.click(timeout=2000)

    def click(self, locator, timeout: float = 30.0) -> None:
        """Clicks, clearing overlays that open late and catch the click, until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                locator.click(timeout=3000)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                self.clear_overlays()

    def settle(self) -> None:
        """Waits a little for the page's requests to finish: bounded, since the UI keeps polling."""
        with contextlib.suppress(Exception):
            self.page.wait_for_load_state("networkidle", timeout=3000)
        self.clear_overlays()

    def scroll_to_top(self) -> None:
        # The UI scrolls inside its own panels, not the document: reset every scrolled element.
        self.page.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")

    def toggle_sidebar(self) -> None:
        button = self.page.get_by_role("button", name="Toggle sidebar")
        if button.count():
            self.click(button.first)

    def row(self, run_id: str):
        """A run's row in the runs table: ag-grid's row id is the run id.

        ag-grid draws a row once per pinned column block; the block with the run name cell is
        the one to act on.
        """
        return self.page.locator(f'[role="row"][row-id="{run_id}"]').filter(
            has=self.page.locator('[role="gridcell"][col-id*="Run Name"]'))

    def open_runs_table(self, experiment_id: str, top_level: list[str]) -> None:
        self.page.goto(f"{self.base_url}/#/experiments/{experiment_id}")
        # MLflow 3 opens an experiment in its GenAI view; Keras runs live in "Model training".
        workflow = self.page.get_by_role("button", name="Model training", exact=True)
        try:
            workflow.wait_for(timeout=20000)
            self.click(workflow)
        except Exception:
            self.page.goto(f"{self.base_url}/#/experiments/{experiment_id}/runs")
        for run_id in top_level:
            self.row(run_id).wait_for(timeout=30000)
        self.settle()

    def expand(self, parent_id: str, children: list[str]) -> None:
        # The only button in a parent's run name cell is the +/- that shows its child runs
        # (it has no label: the name is a link, the colour a label).
        cell = self.row(parent_id).locator('[role="gridcell"][col-id*="Run Name"]')
        self.click(cell.locator("button").first)
        for child in children:
            self.row(child).wait_for(timeout=15000)

    def fit_run_names(self) -> None:
        """Sizes the run name column to its longest name, so sweep and trial names are not cut off.

        A double click on a column's edge is ag-grid's auto-size.
        """
        header = self.page.locator('[role="columnheader"][col-id*="Run Name"]').first
        handle = header.locator(".ag-header-cell-resize")
        if handle.count():
            header.hover()
            handle.dblclick()
            # A single run's name lists its overrides and can fill the window: past NAME_WIDTH it
            # is cut, so that the metric and param columns stay in the picture.
            box = header.bounding_box()
            if box and box["width"] > NAME_WIDTH:
                grip = handle.bounding_box()
                x, y = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
                self.page.mouse.move(x, y)
                self.page.mouse.down()
                self.page.mouse.move(x - (box["width"] - NAME_WIDTH), y, steps=10)
                self.page.mouse.up()

    def choose_columns(self, metrics: list[str], params: list[str]) -> list[str]:
        """In the Columns menu: hides the attribute columns, ticks these metrics and params.

        The attribute columns (dataset, source, models, ...) are empty or the same for these
        runs and would push the metrics out of the window. Returns the names not found.
        """
        self.click(self.page.get_by_role("button", name="Columns"))
        search = self.page.get_by_placeholder("Search columns")
        search.wait_for(timeout=10000)
        self._set_tree_nodes("Attributes", None, checked=False)
        missing = []
        for group, names in (("Metrics", metrics), ("Parameters", params)):
            for name in names:
                search.fill(name)
                self.page.wait_for_timeout(300)  # the filter applies after typing
                if not self._set_tree_nodes(group, name, checked=True):
                    missing.append(f"{group.lower()}.{name}")
        search.fill("")
        self.page.keyboard.press("Escape")
        return missing

    def _set_tree_nodes(self, group: str, name: str | None, checked: bool) -> bool:
        """Checks or unchecks the node `name` (None: every node) of `group`; False if none was found.

        The menu is a flat tree: group nodes ("Metrics (22)") followed by their leaves. The
        same name can be a metric and a param, so the group is tracked.
        """
        nodes = self.page.locator('[data-testid="column-selector-tree"] [class*="tree-treenode"]')
        current, found = None, False
        for i in range(nodes.count()):
            node = nodes.nth(i)
            title = node.locator('[class*="tree-title"]').inner_text().strip()
            if title.split(" (")[0] in GROUPS:
                current = title.split(" (")[0]
            elif current == group and name in (None, title):
                found = True
                box = node.locator('[class*="tree-checkbox"]').first
                if ("tree-checkbox-checked" in (box.get_attribute("class") or "")) != checked:
                    box.click()
        return found

    def select(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self.row(run_id).locator('input[type="checkbox"]').first.check()

    def compare(self, run_ids: list[str]) -> None:
        self.click(self.page.get_by_role("button", name="Compare", exact=True))
        self.page.wait_for_url("**/compare-runs**", timeout=30000)
        for run_id in run_ids:  # every compared run links to its page
            self.page.locator(f'a[href*="{run_id}"]').first.wait_for(timeout=30000)
        self.settle()

    def show_diff_only(self) -> None:
        """Hides the rows that are the same for every run, in the Parameters and Metrics tables."""
        for switch in self.page.get_by_role("switch").all():
            label = switch.get_attribute("aria-label") or ""
            if "diff only" in label.lower() and switch.get_attribute("aria-checked") != "true":
                switch.click()


def take_screenshots(base_url: str, store: Store, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    top_level = list(store.parents) + store.singles
    with tempfile.TemporaryDirectory(prefix="affectexp-chromium-") as profile:
        playwright = sync_playwright().start()
        context = None
        try:
            # A fresh profile each time: no remembered view state, the UI as a first visit shows it.
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport=VIEWPORT, timeout=60000)
            context.set_default_timeout(30000)
            ui = Ui(context.pages[0] if context.pages else context.new_page(), base_url, out)
            try:
                return browse(ui, store, top_level)
            except Exception as error:
                with contextlib.suppress(Exception):
                    ui.shot("failure.png")  # what the page looked like when a step failed
                raise Failure(f"the UI did not show what was expected ({brief(error)}); "
                              f"the page at that moment: {out / 'failure.png'}") from error
        finally:
            # On Ctrl-C the driver and the browser have had the signal too and may be gone
            # already: closing them must not hide the reason for stopping.
            for close in ((context.close,) if context else ()) + (playwright.stop,):
                with contextlib.suppress(Exception):
                    close()


def brief(error: Exception) -> str:
    """Playwright's first line and the locator it was waiting for, without the call log."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    waiting = [line for line in lines[1:] if line.startswith("- waiting for")]
    return "; ".join(lines[:1] + waiting[:1]) or type(error).__name__


def browse(ui: Ui, store: Store, top_level: list[str]) -> list[Path]:
    shots = []
    print("  runs table", flush=True)
    ui.open_runs_table(store.experiment_id, top_level)
    missing = ui.choose_columns(store.metric_columns, store.param_columns)
    if missing:
        print(f"    columns the UI does not offer: {', '.join(missing)}", flush=True)
    for parent, children in store.parents.items():
        ui.expand(parent, children)
    ui.toggle_sidebar()  # the table needs the width more than the navigation does
    ui.fit_run_names()
    ui.page.mouse.move(VIEWPORT["width"] - 1, VIEWPORT["height"] - 1)  # no hover tooltip in the picture
    ui.settle()
    shots.append(ui.shot("runs-table.png"))
    ui.toggle_sidebar()

    print(f"  compare view of {len(store.leaves)} runs", flush=True)
    ui.select(store.leaves)
    ui.compare(store.leaves)
    shots.append(ui.shot("compare.png"))
    ui.show_diff_only()
    # The plot is in compare.png and the artifacts are previews: collapsed, the run details,
    # parameters, metrics and tags fit in one tall picture.
    for section in ("Visualizations", "Artifacts"):
        button = ui.page.get_by_role("button", name=section, exact=True, expanded=True)
        if button.count():
            ui.click(button.first)
    ui.page.set_viewport_size({"width": VIEWPORT["width"], "height": 1600})
    ui.settle()
    ui.scroll_to_top()
    shots.append(ui.shot("compare-details.png"))
    ui.page.set_viewport_size(VIEWPORT)

    search_parent = list(store.parents)[-1]  # the newest parent: the search, made last
    print("  a parent run's page", flush=True)
    ui.page.goto(f"{ui.base_url}/#/experiments/{store.experiment_id}/runs/{search_parent}")
    ui.page.get_by_text(store.names[search_parent], exact=True).first.wait_for(timeout=30000)
    ui.settle()
    shots.append(ui.shot("parent-run.png"))
    return shots


# ---------------------------------------------------------------------------------------------


def _terminate(signum, frame):
    # SIGTERM (and SIGHUP) become SystemExit, so the `finally` blocks stop the server.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    out = args.out.resolve()
    try:
        check_browser(args.chromium)
    except Failure as failure:
        print(f"mlflow_ui.py: {failure}", file=sys.stderr)
        return 1
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="affectexp-ui-"))).resolve()
    keep = args.workdir is not None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        started = time.monotonic()
        if args.skip_training:
            print(f"Runs from {tracking_uri}", flush=True)
        else:
            print(f"Runs into {tracking_uri}", flush=True)
            make_runs(args.python, root)
        store = read_store(tracking_uri, args.metrics, args.params)
        print(f"Screenshots of the MLflow UI into {out}", flush=True)
        with mlflow_ui(args.python, tracking_uri, root, root / "mlflow-ui.log", args.server_timeout) as url:
            shots = take_screenshots(url, store, out, args.chromium)
        if args.readme_image:
            args.readme_image.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shots[0], args.readme_image)
            print(f"  copied {shots[0].name} to {args.readme_image}", flush=True)
        print(f"Done in {time.monotonic() - started:.0f} s: {len(shots)} screenshots in {out}")
    except Failure as failure:
        keep = True  # the message names logs in the folder: they must still be there to read
        print(f"mlflow_ui.py: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlflow_ui.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
