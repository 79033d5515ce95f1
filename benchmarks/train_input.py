"""Training input speed and memory, side by side in one run, same model and cache.

    .venv/bin/python benchmarks/train_input.py          # about 10 minutes on 2 cores

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

from memory import PeakMemory  # noqa: E402  (benchmarks/memory.py)

# Keras is imported inside the functions that use it: the augmenting processes import this
# main module when they start, and they must not load TensorFlow.

BATCH = 64
SKIP_STEPS = 3  # the first steps of each fit: warm-up, queue filling


def compose(root: Path, size: int, overrides: list[str] = ()):
    """train.py's settings (a TrainConfig) for `size` px faces under `root`, as the CLI composes them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from affectexp.tasks.train import read_config

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"paths.root={root}", f"cache.size={size}", "model=simple_cnn",
                                                "augmentation=strong", f"trainer.batch_size={BATCH}", *overrides])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="paths.root holding caches/ (default: the repository)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96])
    parser.add_argument("--steps", type=int, default=30, help="training steps per fit (each case, each round)")
    parser.add_argument("--rounds", type=int, default=24, help="alternating rounds of the inputs")
    parser.add_argument("--child-rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        return peak_rss_child(args.child_rss, args.root)

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
