"""Training throughput on an accelerator machine, and what its input pipeline can deliver: one run.

    .venv/bin/python benchmarks/device.py            # at most about 8 minutes (--budget), GPU machine
    .venv/bin/python benchmarks/device.py --quick    # every case for a few steps at 32 px, batch 16 (a CPU is enough)
    .venv/bin/python benchmarks/device.py --quick --models simple_cnn    # its cases only (minutes on a CPU)

Prepares its own data in a throwaway folder (the synthetic set, preprocess.py caches of 96 px
grey and 224 px RGB faces), then prints one table: training images/s of simple_cnn, resnet,
mobilenet_v3 and efficientnet at 96 px, and of mobilenet_v3 and efficientnet at 224 px RGB, each
compiled as train.py compiles it (build_model) and fed
  (a) batches already on the device, the fastest a model can be fed: in-memory batches in a
      tf.data pipeline prefetched to the GPU (tf.data.experimental.prefetch_to_device), or
      under Keras's JAX backend put on the GPU once (jax.device_put),
  (b) train.py's stream from the HDF5 cache (make_batches, RAM budget 0), no augmentation,
  (c) the same stream with augmentation=strong (trainer.augment_workers processes),
  (d) the stream with augmentation=strong done on the device (trainer.augment_on=device: the
      model behind the preset's augmentation layer, training/device_augment.py);
in float32 and mixed_float16 (what trainer.precision=auto picks on GPUs with tensor cores), with
and without trainer.jit_compile, the GPU's utilisation sampled by nvidia-smi during each timed
fit, and (c)/(a) and (d)/(a), the figures that say whether the input keeps the GPU busy. Then the
input pipeline's own ceiling on this machine's cores (train_input.py --no-model's measurement,
for augmentation none and strong with 1, 2, 4, ... processes), and the on-device augmentation's
own: faces/s of the strong preset's layer in front of a model that costs next to nothing
(global average pooling and a dense layer), XLA-compiled, fed from the device.

It runs under Keras's TensorFlow backend, or with KERAS_BACKEND=jax on a machine whose
environment has JAX and no TensorFlow (there XLA is the default, and jit_compile=false runs
the training step un-compiled, op by op).

Cases run in order of importance (float32 without XLA first, XLA last, whose compilation is
the slowest) until the time budget is spent; each one left is listed as skipped. A case that
fails prints its error in its row and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow and Keras are imported inside the functions: the augmenting processes import this
# main module when they start, and they must not load TensorFlow.
import train_input  # noqa: E402  (benchmarks/train_input.py: caches, settings, the no-model measurement)

FEEDS = {"a": "on device", "b": "stream", "c": "stream+strong", "d": "strong@device"}
# The stream's settings for each feed but (a): augmentation preset, where it is applied.
STREAMS = {"b": ("none", "host"), "c": ("strong", "host"), "d": ("strong", "device")}
PRECISIONS = ("float32", "mixed_float16")
# (model, face size, colour): the models at 96 px (grey, the cache's default colour), the
# keras.applications ones also at ImageNet's 224 px RGB.
SHAPES = [("simple_cnn", 96, "gray"), ("resnet", 96, "gray"), ("mobilenet_v3", 96, "gray"),
          ("efficientnet", 96, "gray"), ("mobilenet_v3", 224, "rgb"), ("efficientnet", 224, "rgb")]
QUICK_SIZE = 32  # the smallest face keras.applications' MobileNetV3 and EfficientNet take
QUICK_BATCH = 16


class GpuSampler:
    """nvidia-smi's GPU utilisation (%, the first GPU), sampled every 100 ms in the background,
    each sample stamped with time.monotonic() as it arrives. `available` is False without
    nvidia-smi; then `mean` is None."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.available = shutil.which("nvidia-smi") is not None
        self._process = None
        if self.available:
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100",
                 "--id=0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._process.stdout:
            try:
                self.samples.append((time.monotonic(), float(line.strip())))
            except ValueError:
                pass

    def mean(self, start: float, end: float) -> float | None:
        """Mean utilisation (%) of the samples taken between the two time.monotonic() moments."""
        values = [value for moment, value in self.samples if start <= moment <= end]
        return statistics.fmean(values) if values else None

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()


def timed_window():
    """A Keras callback recording the moment its fit's SKIP_STEPS-th step ended and the moment
    its epoch ended (Keras reads the epoch's metrics then: the device has finished every step)."""
    import keras

    class Window(keras.callbacks.Callback):
        start = end = None

        def on_train_batch_end(self, batch, logs=None):
            if batch == train_input.SKIP_STEPS - 1:
                self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            self.end = time.monotonic()

    return Window()


def gpu_names() -> list[str]:
    """The GPUs this Keras backend computes on, by name."""
    import keras

    if keras.config.backend() == "jax":
        import jax

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    import tensorflow as tf

    return [tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
            for gpu in tf.config.list_physical_devices("GPU")]


def on_device_batches(faces, labels, batch: int, weights: dict[int, float], to_device: bool = True):
    """(a): the in-memory batches (with train.py's class weights as sample weights), repeated
    without end, each already on the GPU when there is one and `to_device`, so each step finds
    its batch there (else in host memory). Under TensorFlow a tf.data dataset prefetched to the
    GPU, whose elements have the types and shapes of the streamed batches as Keras' adapter
    passes them on (batch axis unknown), so the three feeds share one traced (and XLA-compiled)
    training step; under JAX the batches are put on the device once (jax.device_put) and
    handed to fit as they are."""
    import keras
    import numpy as np

    sample_weights = np.array([weights[int(label)] for label in labels], dtype=np.float32)
    parts = (faces, labels.astype(np.int64), sample_weights)
    if keras.config.backend() == "jax":
        import jax

        batches = [tuple(part[start:start + batch] for part in parts) for start in range(0, len(faces), batch)]
        return endless(jax.device_put(batches) if to_device else batches)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(parts).batch(batch)
    dataset = dataset.cache().repeat()
    if to_device and tf.config.list_physical_devices("GPU"):
        return dataset.apply(tf.data.experimental.prefetch_to_device("/gpu:0", buffer_size=4))
    return dataset.prefetch(4)


def endless(batches: list):
    """A PyDataset of `batches` in turn, without end: its num_batches is None, so each fit's
    steps_per_epoch ends its epoch."""
    import keras

    class Endless(keras.utils.PyDataset):
        @property
        def num_batches(self):
            return None

        def __getitem__(self, index):
            return batches[index % len(batches)]

    return Endless()


def measure(model, feed, batch: int, steps: int, gpu: GpuSampler) -> tuple[float, float | None]:
    """(images/s, mean GPU utilisation %) of `steps` training steps of `model` on `feed`, timed
    after SKIP_STEPS steps; a short fit before it compiles the step for this input outside the
    timing."""
    model.fit(feed, epochs=1, steps_per_epoch=train_input.SKIP_STEPS, verbose=0,
              shuffle=False)
    window = timed_window()
    model.fit(feed, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
              callbacks=[window])
    seconds = window.end - window.start
    return (steps - train_input.SKIP_STEPS) * batch / seconds, gpu.mean(window.start, window.end)


def training_cases(shapes, precisions) -> list[tuple]:
    """(model, size, colour, precision, jit) in the order they run: float32 without XLA for every
    model first (the baseline), then mixed precision, then each with XLA (slowest to compile)."""
    order = [(precision, False) for precision in precisions] + [(precision, True) for precision in reversed(precisions)]
    return [(model, size, color, precision, jit) for precision, jit in order for model, size, color in shapes]


ON_DEVICE_BATCHES = 64  # (a) cycles through this many batches: their content does not change the speed


def timed_steps(rate: float, batch: int, seconds: float, fewest: int, most: int) -> int:
    """Steps of a timed fit for about `seconds` at `rate` images/s, within [fewest, most]."""
    return max(fewest, min(most, round(seconds * rate / batch) + train_input.SKIP_STEPS))


def run_group(root: Path, caches, case, batch: int, seconds: float, fewest: int, gpu: GpuSampler, report) -> None:
    """The feeds of one (model, size, colour, precision, jit): one compiled model for (a)-(c), and
    the same model behind the augmentation layer for (d); each timed fit lasts about `seconds` at
    (a)'s speed (at least `fewest` steps, at most what the cache's train split holds)."""
    import keras

    from affectexp.data.cache import FaceCache
    from affectexp.tasks.train import build_model, loss_class_weights, make_batches

    model_name, size, color, precision, jit = case
    cache_path = caches[size, color]
    overrides = [f"cache.color={color}", f"cache.path={cache_path}", "trainer.ram_budget_mb=0",
                 f"trainer.batch_size={batch}", f"trainer.precision={precision}",
                 f"trainer.jit_compile={str(jit).lower()}"]
    keras.backend.clear_session()
    with FaceCache(cache_path) as cache:
        most = cache.split_size("train") // batch  # whole batches of one streamed epoch
        settings = train_input.compose(root, size, overrides, "none", model_name)
        model = build_model(settings, cache.face_shape, len(cache.class_names), most)
        labels = cache.labels("train")
        weights = loss_class_weights(str(settings.trainer.balance), labels, len(cache.class_names))
        count = min(most, ON_DEVICE_BATCHES) * batch
        faces = cache.read_faces("train", 0, count)
        rates, steps = {}, fewest
        for feed in FEEDS:
            note = ""
            if feed == "a":
                batches = on_device_batches(faces, labels[:count], batch, weights)
                try:  # compiles the step, and tells how many steps make `seconds`
                    probe, _ = measure(model, batches, batch, train_input.SKIP_STEPS + 5, gpu)
                    steps = timed_steps(probe, batch, seconds, fewest, most)
                except Exception as error:  # noqa: BLE001  (Keras' fit refused the device iterator)
                    note = f"host batches: the device feed failed ({type(error).__name__})"
                    batches = on_device_batches(faces, labels[:count], batch, weights, to_device=False)
            else:
                augmentation, where = STREAMS[feed]
                feed_settings = train_input.compose(root, size, [*overrides, f"trainer.augment_on={where}"],
                                                    augmentation, model_name)
                batches, val = make_batches(cache, feed_settings.trainer, feed_settings.augmentation.transform,
                                           tuple(feed_settings.head.outputs))
                val.close()
            try:
                trained = model if feed != "d" else \
                    build_model(feed_settings, cache.face_shape, len(cache.class_names), most)
                rates[feed], utilisation = measure(trained, batches, batch, steps, gpu)
                report(case, feed, rates[feed], rates[feed] / rates["a"] if feed != "a" and "a" in rates else None,
                       utilisation, f"{steps} steps" + (f"; {note}" if note else ""))
            except Exception as error:  # noqa: BLE001  (the row says what failed; the run goes on)
                report(case, feed, None, None, None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
            finally:
                if feed != "a":
                    batches.close()


def device_augmentation_rate(root: Path, size: int, color: str, batch: int, seconds: float, fewest: int,
                             gpu: GpuSampler) -> tuple[float, float | None]:
    """(faces/s, mean GPU utilisation %) of the strong preset's augmentation layer on the device,
    in front of a model that costs next to nothing, XLA-compiled, fed batches already on the device."""
    import keras
    import numpy as np

    from affectexp.training.device_augment import with_device_augmentation

    settings = train_input.compose(root, size, [f"cache.color={color}"], "strong")
    channels = 3 if color == "rgb" else 1
    inputs = keras.Input((size, size, channels))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = with_device_augmentation(keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(pooled)),
                                     settings.augmentation.transform, 0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    count = ON_DEVICE_BATCHES * batch
    faces = rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    feed = on_device_batches(faces, rng.integers(0, 7, count), batch, {c: 1.0 for c in range(7)})
    probe, _ = measure(model, feed, batch, train_input.SKIP_STEPS + 5, gpu)
    return measure(model, feed, batch, timed_steps(probe, batch, seconds, fewest, 100_000), gpu)


def augmentation_row(root: Path, size: int, color: str, batch: int, seconds: float, fewest: int, gpu: GpuSampler,
                     spent: bool) -> dict:
    """device_augmentation_rate's row for one face shape, printed (None and why where it failed
    or the time budget was `spent`)."""
    note = " (skipped: time budget spent)"
    rate = None
    if not spent:
        try:
            rate, utilisation = device_augmentation_rate(root, size, color, batch, seconds, fewest, gpu)
            note = "" if utilisation is None else f", GPU {utilisation:.0f}%"
        except Exception as error:  # noqa: BLE001  (the row says what failed; the run goes on)
            note = f" ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    print(f"  {size:>3} {color:>5} strong on the device: {'-' if rate is None else f'{rate:.0f}'} faces/s{note}",
          flush=True)
    return {"ceiling": True, "on_device": True, "px": size, "color": color, "augmentation": "strong",
            "faces_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"every case for a few steps at {QUICK_SIZE} px")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds for the whole run, data included; cases left then are skipped")
    parser.add_argument("--batch", type=int, help=f"batch size (default: trainer.batch_size's; --quick {QUICK_BATCH})")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="timed seconds per fit, about (at (a)'s speed; --quick: a few steps instead)")
    parser.add_argument("--stream-faces", type=int, default=16000,
                        help="train faces of the streamed caches (the synthetic set's, repeated): a fit's most steps")
    parser.add_argument("--models", nargs="+", choices=sorted({model for model, _, _ in SHAPES}),
                        help="only these models' rows (default: every model's)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="only these precisions' rows (a CPU runs mixed_float16 hundreds of times slower)")
    parser.add_argument("--out", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args()
    from affectexp.data.cache import FaceCache

    started = time.monotonic()
    deadline = started + args.budget
    fewest = train_input.SKIP_STEPS + (2 if args.quick else 20)
    shapes = [(model, QUICK_SIZE if args.quick else size, color) for model, size, color in SHAPES
              if not args.models or model in args.models]
    rows: list[dict] = []

    with tempfile.TemporaryDirectory(prefix="affectexp-device-") as folder:
        root = Path(folder)
        batch = args.batch or (QUICK_BATCH if args.quick else train_input.compose(root, 96).trainer.batch_size)
        # Generating the synthetic set is the slow part (about 65 photos/s a core): its train split
        # is repeated in the streamed caches up to --stream-faces (train: 0.9 of 5 classes' faces).
        per_class = 60 if args.quick else 1000
        caches = train_input.synthetic_caches(root, sorted({(size, color) for _, size, color in shapes}), per_class)
        for key, path in caches.items():
            with FaceCache(path) as cache:
                times = math.ceil(args.stream_faces / cache.split_size("train"))
            if times > 1 and not args.quick:
                caches[key] = str(train_input.repeated_cache(path, Path(path).with_name(f"repeated-{Path(path).name}"),
                                                             times))
        prepared = time.monotonic() - started

        import keras  # after the caches: preprocess.py's workers need no TensorFlow here

        names = gpu_names()
        gpu = GpuSampler()
        print(f"Device benchmark: {', '.join(names) or 'no GPU'}, {os.cpu_count()} cores, Keras "
              f"{keras.__version__} on {keras.config.backend()}; batch {batch}, "
              f"images/s over each fit's steps after the first {train_input.SKIP_STEPS} (fits of about "
              f"{args.seconds} s at (a)'s speed, at least {fewest} steps); data prepared in {prepared:.0f} s "
              f"({per_class} synthetic faces per class)"
              + ("" if gpu.available else "; GPU utilisation: nvidia-smi not found, not sampled"), flush=True)
        header = (f"| {'model':<12} | {'px':>3} | {'color':<5} | {'feed':<15} | {'precision':<13} | {'jit':<5} "
                  f"| {'images/s':>8} | {'x (a)':>5} | {'GPU %':>5} | note")
        print(header + "\n|" + "|".join("-" * (len(part)) for part in header.split("|")[1:]), flush=True)

        def report(case, feed, rate, ratio, utilisation, note=""):
            model_name, size, color, precision, jit = case
            rows.append({"model": model_name, "px": size, "color": color, "feed": feed, "precision": precision,
                         "jit": jit, "images_per_s": rate, "ratio_to_a": ratio, "gpu_utilisation": utilisation,
                         "note": note})
            print(f"| {model_name:<12} | {size:>3} | {color:<5} | {feed + ' ' + FEEDS[feed]:<15} | {precision:<13} "
                  f"| {str(jit).lower():<5} | {'-' if rate is None else f'{rate:.0f}':>8} "
                  f"| {'-' if ratio is None else f'{ratio:.2f}':>5} "
                  f"| {'-' if utilisation is None else f'{utilisation:.0f}':>5} | {note}", flush=True)

        # The ceiling takes its share first, so that a budget spent on training still leaves it.
        ceiling_seconds = 0.15 * args.budget
        cases = training_cases(shapes, tuple(args.precisions))
        group_seconds = []
        try:
            for index, case in enumerate(cases):
                left = deadline - time.monotonic() - ceiling_seconds
                # The longest group so far of the same kind (XLA compiles for longer), else of any kind.
                same = [seconds for (_, _, _, _, jit), seconds in group_seconds if jit == case[4]]
                expected = max(same or [seconds for _, seconds in group_seconds] or [0.0])
                if left < expected:
                    for skipped in cases[index:]:
                        for feed in FEEDS:
                            report(skipped, feed, None, None, None, "skipped: time budget spent")
                    print(f"skipped {len(cases) - index} of {len(cases)} model groups: the time budget "
                          f"({args.budget:.0f} s) was spent", flush=True)
                    break
                begun = time.monotonic()
                run_group(root, caches, case, batch, 0.0 if args.quick else args.seconds, fewest, gpu, report)
                group_seconds.append((case, time.monotonic() - begun))
            print("\nOn-device augmentation alone (augmentation=strong, trainer.augment_on=device; a model of a "
                  "pooling and a dense layer, XLA, batches on the device): faces/s", flush=True)
            for size, color in sorted({(size, color) for _, size, color in shapes}):
                rows.append(augmentation_row(root, size, color, batch, 0.0 if args.quick else args.seconds, fewest,
                                             gpu, spent=time.monotonic() > deadline - ceiling_seconds))
        finally:
            gpu.close()

        print(f"\nInput pipeline ceiling, no model (train_input.py --no-model), {os.cpu_count()} cores: faces/s "
              "delivered to fit", flush=True)
        print(train_input.PIPELINE_HEADER, flush=True)
        ceiling_shapes = sorted({(size, color) for _, size, color in shapes})
        processes = train_input.process_counts()
        for position, (size, color) in enumerate(ceiling_shapes):
            share = (deadline - time.monotonic()) / (len(ceiling_shapes) - position)
            for row in train_input.pipeline_rates(root, caches[size, color], size, color, ("none", "strong"),
                                                  processes, rounds=1 if args.quick else 3,
                                                  seconds=0.2 if args.quick else 1.0,
                                                  deadline=time.monotonic() + share / 2):
                rows.append({"ceiling": True, **row})
                print(train_input.format_pipeline_row(row), flush=True)
    print(f"\ntotal {time.monotonic() - started:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
