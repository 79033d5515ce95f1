"""Training input speed and memory, side by side in one run, same model and cache.

    .venv/bin/python benchmarks/train_input.py            # about 20 minutes on 2 cores
    .venv/bin/python benchmarks/train_input.py --no-model # the input pipeline alone, about 6 minutes

Needs the 48 and 96 px synthetic caches (the command to build a missing one is printed):
    python preprocess.py cache.size=48 && python preprocess.py cache.size=96

Measures, for each face size, the same model (conf/model/simple_cnn.yaml, compiled as
train.py compiles it) trained on
  (a) the train split as in-memory NumPy arrays, no augmentation (Keras' fastest input),
  (b) CacheBatches streaming from HDF5 in chunk order (RAM budget 0), no augmentation, and
  (c) the same with augmentation=strong, the way train.py feeds it (augmenting processes
      at idle priority, trainer.augment_workers);
in short alternating rounds, since the machine is shared, and reports images/s from the
median step time (first steps of an epoch stall for reasons unrelated to the input) and, as
the headline, the median over the rounds of each round's ratio (c) / (a). Each input is
built once and serves every round, as one CacheBatches serves every epoch of a run (the
augmenting processes start once per run). Then, each in a fresh process, the peak RSS
(training process plus its augmenting processes) of one streamed epoch of (c) on the 48 px
cache and on a copy with its train split repeated 4 times. Not a test: it prints figures and
the targets beside them (>= 0.9x images/s; <= 1.1x peak RSS).

--no-model: the faces/s that train.py's input pipeline alone delivers to fit, with no model
to train: the batches of make_batches (streamed from HDF5 in chunk order, ordered, balanced
as trainer.balance says, augmented by trainer.augment_workers processes) read through the
same Keras adapter and dataset fit iterates (tf.data; under JAX the adapter's iterator), at
each face size and colour, for augmentation none, light and strong, with 1..N augmenting
processes (N: this machine's cores), so the ceiling a fast accelerator could be fed at, and
its scaling with cores, is a measured curve. The caches are built with preprocess.py (a
synthetic set) in a throwaway folder. Each round reads one epoch of every case of a face size and colour in turn; a case's
figure is the median over the rounds, its scaling the median of the rounds' own ratios to
the same augmentation with 1 process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from memory import PeakMemory, children  # noqa: E402  (benchmarks/memory.py)

# Keras is imported inside the functions that use it: the augmenting processes import this
# main module when they start, and they must not load TensorFlow.

BATCH = 64
SKIP_STEPS = 3  # the first steps of each fit: warm-up, queue filling


def compose(root: Path, size: int, overrides: list[str] = (), augmentation: str = "strong", model: str = "simple_cnn"):
    """train.py's settings (a TrainConfig) for `size` px faces under `root`, as the CLI composes them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from affectexp.tasks.train import read_config

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"paths.root={root}", f"cache.size={size}", f"model={model}",
                                                f"augmentation={augmentation}", f"trainer.batch_size={BATCH}",
                                                *overrides])
    return read_config(cfg)[0]


def require_cache(cfg) -> str:
    from affectexp.training.caches import preprocess_command

    if not Path(cfg.cache.path).is_file():
        sys.exit(f"{cfg.cache.path} is missing; build it with: {preprocess_command(cfg)}")
    return cfg.cache.path


def step_times():
    """A Keras callback whose `seconds` collects the time between consecutive training steps,
    after the first SKIP_STEPS of each fit."""
    import keras

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_train_begin(self, logs=None):
            self._last, self._step = None, 0

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self._last is not None and self._step >= SKIP_STEPS:
                self.seconds.append(now - self._last)
            self._last, self._step = now, self._step + 1

    return StepTimes()


def streamed_batches(cache, cfg, steps: int | None, augment: bool = True):
    """What train.py feeds fit(), streamed from the opened `cache`: chunk order, 2 reader threads,
    cfg's augmentation (in trainer.augment_workers processes) or none."""
    from affectexp.training.inputs import CacheBatches
    from affectexp.tasks.train import augment_workers

    return CacheBatches(cache, "train", BATCH, shuffle=True, seed=0,
                        augmentation=cfg.augmentation.transform if augment else None, ram_budget_bytes=0,
                        steps=steps, workers=2, augment_workers=augment_workers(cfg.trainer))


# The inputs compared, in the order of each round: name -> augmented?
STREAMED = {"streamed": False, "streamed_strong": True}


def speed(root: Path, size: int, steps: int, rounds: int) -> tuple[dict[str, float], list[float]]:
    """(median images/s of the same model fed (a) NumPy arrays in memory, no augmentation,
    (b) streamed from HDF5, no augmentation, (c) streamed with augmentation=strong; the
    ratio (c) / (a) of each round, from the rounds' median step times).

    The rounds are short and paired because this machine's speed drifts by 20% over seconds
    (other virtual machines on the host): both inputs of a round see about the same machine.
    """
    from affectexp.data.cache import FaceCache
    from affectexp.tasks.train import build_model

    cfg = compose(root, size)
    require_cache(cfg)
    cache = FaceCache(cfg.cache.path)
    faces, labels = cache.read_faces("train", 0, steps * BATCH), cache.labels("train")[:steps * BATCH]
    model = build_model(cfg, faces.shape[1:], len(cache.class_names), steps)
    times = {name: [] for name in ("numpy", *STREAMED)}  # per input, each round's step times
    model.fit(faces[:4 * BATCH], labels[:4 * BATCH], batch_size=BATCH, verbose=0)  # compile outside the timing
    inputs = {name: streamed_batches(cache, cfg, steps, augment) for name, augment in STREAMED.items()}
    try:
        for batches in inputs.values():
            model.fit(batches, epochs=1, steps_per_epoch=SKIP_STEPS, verbose=0, shuffle=False)  # start the augmenting processes
        for _ in range(rounds):
            times["numpy"].append(step_times())
            model.fit(faces, labels, batch_size=BATCH, epochs=1, verbose=0, callbacks=[times["numpy"][-1]])
            for name, batches in inputs.items():
                times[name].append(step_times())
                model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[times[name][-1]])
    finally:
        for batches in inputs.values():
            batches.close()
        cache.close()
    medians = {name: BATCH / statistics.median([step for each in per_round for step in each.seconds])
               for name, per_round in times.items()}
    ratios = [statistics.median(plain.seconds) / statistics.median(strong.seconds)
              for plain, strong in zip(times["numpy"], times["streamed_strong"])]
    return medians, ratios


def repeated_cache(source: str, target: Path, times: int) -> Path:
    """A copy of `source` whose train split is repeated `times` times (val and test once)."""
    import h5py

    from affectexp.data.cache import COLUMNS, FaceCache, create_layout

    with FaceCache(source) as cache, h5py.File(target, "w") as out:
        ranges = cache.split_ranges
        pieces = [ranges["train"]] * times + [ranges[s] for s in ("val", "test")]
        rows = sum(stop - start for start, stop in pieces)
        create_layout(out, rows, cache.face_shape, cache.chunk_rows)
        offset = 0
        for start, stop in pieces:
            for step in range(start, stop, cache.chunk_rows):
                end = min(step + cache.chunk_rows, stop)
                out["faces"][offset:offset + end - step] = cache.faces[step:end]
                for name in (*COLUMNS, "source_row"):
                    out[name][offset:offset + end - step] = cache.file[name][step:end]
                offset += end - step
        for key, value in cache.file.attrs.items():
            out.attrs[key] = value
        train_rows = times * (ranges["train"][1] - ranges["train"][0])
        val_rows, test_rows = (ranges[s][1] - ranges[s][0] for s in ("val", "test"))
        out.attrs["split_ranges"] = json.dumps({"train": [0, train_rows],
                                                "val": [train_rows, train_rows + val_rows],
                                                "test": [train_rows + val_rows, rows]})
    return target


def peak_rss_child(cache_path: str, root: Path) -> None:
    """In a fresh process: one streamed epoch with augmentation=strong; prints as JSON the peak
    RSS (MB) of this process and its augmenting processes together."""
    from affectexp.data.cache import FaceCache
    from affectexp.tasks.train import build_model

    cfg = compose(root, 48, [f"cache.path={cache_path}"])
    sampler = PeakMemory()
    sampler.start()
    with FaceCache(cache_path) as cache:
        faces = cache.split_size("train")
        batches = streamed_batches(cache, cfg, None)
        model = build_model(cfg, cache.face_shape, len(cache.class_names), len(batches))
        started = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
        sampler.stop()
        batches.close()
    print(json.dumps({"faces": faces, "seconds": seconds, "peak_rss_mb": sampler.total_mb,
                      "worker_rss_mb": sampler.worker_mb}))


def peak_rss(cache_path: str, root: Path) -> dict:
    command = [sys.executable, __file__, "--root", str(root), "--child-rss", cache_path]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the input pipeline alone (--no-model) ---------------------------------------------------

AUGMENTATIONS = ("none", "light", "strong")


def process_counts(cores: int | None = None) -> list[int]:
    """1, 2, 4, ... up to this machine's cores, and the cores themselves."""
    cores = cores or os.cpu_count() or 1
    return sorted({2 ** k for k in range(cores.bit_length()) if 2 ** k <= cores} | {cores})


def synthetic_caches(root: Path, shapes: list[tuple[int, str]], train_per_class: int) -> dict[tuple[int, str], str]:
    """(size, colour) -> the path of a cache of the synthetic set with those faces under `root`,
    built by preprocess.py (the set itself is generated once, by the first)."""
    paths = {}
    for size, color in shapes:
        overrides = [f"paths.root={root}", f"cache.size={size}", f"cache.color={color}",
                     f"dataset.train_per_class={train_per_class}", "dataset.test_per_class=20"]
        done = subprocess.run([sys.executable, str(REPO / "preprocess.py"), *overrides], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.exit(f"preprocess.py {' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
        paths[size, color] = compose(root, size, [f"cache.color={color}"]).cache.path
    return paths


def cpu_seconds() -> float:
    """User + system CPU time of this process and its living child processes (the augmenting
    processes), seconds: what a case costs in cores, whatever else the machine runs."""
    total = 0.0
    for pid in ["self", *children()]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class FitFeed:
    """train.py's training batches (make_batches) for one augmentation and count of augmenting
    processes, read as fit reads them: through Keras' PyDataset adapter (with the class weights
    of trainer.balance) and what this Keras backend's fit iterates (the tf.data dataset it makes;
    under JAX the adapter's own iterator), one epoch at a time, with no model."""

    def __init__(self, cache, settings):
        # What fit wraps a PyDataset in (Keras' own, not public API).
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        from affectexp.tasks.train import make_batches

        trainer = settings.trainer
        self.batches, val = make_batches(cache, trainer, settings.augmentation.transform, tuple(settings.head.outputs))
        val.close()
        # The batches carry trainer.balance's class weights as per-row weights themselves.
        self.adapter = PyDatasetAdapter(self.batches, shuffle=False)
        import keras

        # Each epoch fit iterates again the tf.data dataset made once (TensorFlow), or a new
        # iterator of the adapter (JAX).
        if keras.config.backend() == "tensorflow":
            dataset = self.adapter.get_tf_dataset()
            self.epoch_batches = lambda: dataset
        else:
            self.epoch_batches = self.adapter.get_jax_iterator

    def epoch(self, epoch: int) -> tuple[int, float, float]:
        """(faces, seconds, CPU seconds of this process and its children) of one epoch, from the
        arrival of its SKIP_STEPS-th batch to that of its last: the steady state, as in an
        epoch of real AffectNet's thousands of batches."""
        self.batches.set_epoch(epoch)  # as FollowEpochs does
        self.adapter.on_epoch_begin()
        last = len(self.batches) - 1
        if last <= SKIP_STEPS:
            raise ValueError(f"an epoch of {last + 1} batches is too short to time; build a larger cache")
        faces = 0
        for step, batch in enumerate(self.epoch_batches()):
            # Up to the last batch's arrival: the enqueuer's stop after it waits 0.1 s on its queue.
            if step == SKIP_STEPS:
                start = time.perf_counter(), cpu_seconds()
            elif step > SKIP_STEPS:
                faces += int(batch[0].shape[0])
            if step == last:
                end = time.perf_counter(), cpu_seconds()
        self.adapter.on_epoch_end()
        return faces, end[0] - start[0], end[1] - start[1]

    def rate(self, epoch: int, seconds: float) -> tuple[float, float]:
        """(faces/s, CPU ms per 1000 faces) over epochs from `epoch` on, at least `seconds` timed."""
        faces = wall = cpu = 0.0
        while wall < seconds:
            more, more_wall, more_cpu = self.epoch(epoch)
            faces, wall, cpu, epoch = faces + more, wall + more_wall, cpu + more_cpu, epoch + 1
        return faces / wall, 1e6 * cpu / faces

    def close(self) -> None:
        self.batches.close()


def reader_threads(processes: int) -> int:
    """CacheBatches' reader threads with `processes` augmenting processes (see its __init__)."""
    return max(2, processes)


def pipeline_cases(augmentations, processes) -> list[tuple[str, int]]:
    """(augmentation, augmenting processes) to measure; without augmentation the processes are
    not started and only the reader threads they imply differ, so one case per count of threads."""
    cases = []
    for augmentation in augmentations:
        threads = set()
        for n in sorted(processes):
            if augmentation == "none" and reader_threads(n) in threads:
                continue
            threads.add(reader_threads(n))
            cases.append((augmentation, n))
    return cases


def pipeline_rates(root: Path, cache_path: str, size: int, color: str, augmentations, processes,
                   rounds: int, seconds: float, deadline: float = math.inf) -> list[dict]:
    """One row per (augmentation, processes): faces/s delivered to fit from the cache at
    `cache_path` (median over `rounds` rounds, each reading every case in turn for at least
    `seconds`), as `scaling` the median of each round's ratio to the same augmentation with
    the fewest processes, and the CPU ms per 1000 faces (median). Rounds stop early (after at
    least one) once time.monotonic() passes `deadline`."""
    from affectexp.data.cache import FaceCache

    cases = pipeline_cases(augmentations, processes)
    cache = FaceCache(cache_path)
    feeds = {}
    try:
        for augmentation, n in cases:
            settings = compose(root, size, [f"cache.color={color}", f"cache.path={cache_path}",
                                            "trainer.ram_budget_mb=0", f"trainer.augment_workers={n}"], augmentation)
            feeds[augmentation, n] = FitFeed(cache, settings)
            feeds[augmentation, n].epoch(0)  # starts the augmenting processes, outside the timing
        rates = {case: [] for case in cases}
        cpu = {case: [] for case in cases}
        epoch = 1
        for _ in range(rounds):
            for case in cases:
                rate, cpu_ms = feeds[case].rate(epoch, seconds)
                rates[case].append(rate)
                cpu[case].append(cpu_ms)
            epoch += 1000  # each round reads other epochs (augmentation seeds) than the last
            if time.monotonic() > deadline:
                break
    finally:
        for feed in feeds.values():
            feed.close()
        cache.close()
    rows = []
    for augmentation, n in cases:
        base = rates[augmentation, min(processes)]
        rows.append({"px": size, "color": color, "augmentation": augmentation,
                     "processes": n if augmentation != "none" else 0, "readers": reader_threads(n),
                     "faces_per_s": statistics.median(rates[augmentation, n]),
                     "scaling": statistics.median(r / b for r, b in zip(rates[augmentation, n], base)),
                     "cpu_ms_per_1000": statistics.median(cpu[augmentation, n]), "rounds": rates[augmentation, n]})
    return rows


def format_pipeline_row(row: dict) -> str:
    return (f"{row['px']:>4} {row['color']:>5} {row['augmentation']:>7} {row['processes']:>9} {row['readers']:>7} "
            f"{row['faces_per_s']:>9.0f} {row['scaling']:>10.2f}x {row['cpu_ms_per_1000']:>14.0f}  "
            f"{' '.join(f'{r:.0f}' for r in row['rounds'])}")


PIPELINE_HEADER = (f"{'px':>4} {'color':>5} {'augment':>7} {'processes':>9} {'readers':>7} {'faces/s':>9} "
                   f"{'x fewest':>11} {'CPU ms/1000':>14}  faces/s of each round")


def no_model(args) -> None:
    import tempfile

    processes = args.processes or process_counts()
    shapes = [(size, color) for size in args.sizes for color in args.colors]
    with tempfile.TemporaryDirectory(prefix="affectexp-input-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        caches = synthetic_caches(root, shapes, args.train_per_class)
        print(f"Input pipeline alone (no model): train.py's batches of {BATCH} as fit reads them, streamed from "
              f"HDF5 (caches of {args.train_per_class} synthetic faces per class built in "
              f"{time.perf_counter() - started:.0f} s), {os.cpu_count()} cores (load average "
              f"{os.getloadavg()[0]:.1f}); median of {args.rounds} rounds of at least {args.seconds} s per case, "
              f"scaling: median of the rounds' ratios to {min(processes)} process(es); CPU ms/1000: this "
              "process and its augmenting processes, per 1000 faces")
        print(PIPELINE_HEADER, flush=True)
        for size, color in shapes:
            for row in pipeline_rates(root, caches[size, color], size, color, args.augmentations, processes,
                                      args.rounds, args.seconds):
                print(format_pipeline_row(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="paths.root holding caches/ (default: the repository)")
    parser.add_argument("--no-model", action="store_true", help="the input pipeline alone: faces/s delivered to fit")
    parser.add_argument("--sizes", type=int, nargs="+", help="face sizes (default: 48 96; with --no-model 48 96 112)")
    parser.add_argument("--colors", nargs="+", default=["gray", "rgb"], choices=["gray", "rgb"], help="--no-model")
    parser.add_argument("--augmentations", nargs="+", default=list(AUGMENTATIONS), choices=AUGMENTATIONS,
                        help="--no-model")
    parser.add_argument("--processes", type=int, nargs="+",
                        help="--no-model: counts of augmenting processes (default: 1, 2, 4, ... up to the cores)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="--no-model: timed seconds (at least) of each case in each round")
    parser.add_argument("--train-per-class", type=int, default=400,
                        help="--no-model: synthetic faces per expression (400: 1800 train faces in basic5)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per fit (each case, each round)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of the inputs (default: 24; --no-model 5)")
    parser.add_argument("--child-rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        return peak_rss_child(args.child_rss, args.root)
    if args.no_model:
        args.sizes, args.rounds = args.sizes or [48, 96, 112], args.rounds or 5
        return no_model(args)
    args.sizes, args.rounds = args.sizes or [48, 96], args.rounds or 24

    print(f"Training input benchmark: simple_cnn, batch {BATCH}, median step time over {args.rounds} alternating "
          f"rounds of {args.steps} steps per input")
    print(f"{'px':>4} {'NumPy, no aug':>14} {'HDF5 stream, no aug':>20} {'HDF5 stream + strong':>21} "
          f"{'ratio (target >= 0.9)':>22}  ratio of each round")
    for size in args.sizes:
        figures, ratios = speed(args.root, size, args.steps, args.rounds)
        print(f"{size:>4} {figures['numpy']:>10.0f} i/s {figures['streamed']:>16.0f} i/s "
              f"{figures['streamed_strong']:>17.0f} i/s {statistics.median(ratios):>22.2f}  "
              f"{' '.join(f'{r:.2f}' for r in ratios)}", flush=True)

    source = require_cache(compose(args.root, 48))
    bigger = repeated_cache(source, Path(source).with_name("benchmark-4x.h5"), 4)
    try:
        small, large = peak_rss(source, args.root), peak_rss(str(bigger), args.root)
    finally:
        bigger.unlink(missing_ok=True)
    print("\nPeak RSS (training process + augmenting processes), one streamed epoch with augmentation=strong "
          "(48 px), each in a fresh process:")
    for label, figures in (("1x", small), ("4x", large)):
        print(f"  {label}: {figures['faces']:>6} train faces  {figures['peak_rss_mb']:7.0f} MB  "
              f"(largest augmenting process {figures['worker_rss_mb']:.0f} MB; {figures['seconds']:.0f} s)")
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"  ratio 4x / 1x: {ratio:.3f}  target <= 1.10  ({math.ceil(large['faces'] / BATCH)} steps streamed)")


if __name__ == "__main__":
    main()
