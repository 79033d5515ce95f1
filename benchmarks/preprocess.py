"""Preprocessing speed and memory, measured side by side in one run on the same files.

    .venv/bin/python benchmarks/preprocess.py                # 48 px faces, as the seed notebook's; about 15 minutes
    .venv/bin/python benchmarks/preprocess.py --size 96      # the cache's default size

Builds realistic photos once (the synthetic generator's faces, rescaled to 300-1000 px sides,
with sensor noise and JPEG quality 70-95) under the work folder and reuses them; rows cycle
over the photos to reach N rows. Measures, each in a fresh process:
  (a) the seed notebook's loop: cv2.imread(path, 0), crop, cv2.resize, /255, append one row
      to a pandas DataFrame (quadratic: its 100k figure is extrapolated from the measured
      run's own time curve unless --seed-full);
  (b) a plain full-decode loop: cv2.imread + crop + INTER_AREA into a uint8 array, 1 process;
  (c) affectexp's run_preprocess with 1 and with all workers (CSV reading, cropping and the
      finished HDF5 cache included);
  (d) affectexp's peak RSS at N and 4N rows.
Rounds of (a), (b), (c) are interleaved and medians reported, since the machine is shared.
This is not a test: it prints figures and the issue's targets beside them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectexp.data import affectnet_layout as layout  # noqa: E402
from memory import PeakMemory, rss_mb  # noqa: E402  (benchmarks/memory.py)

PHOTO_PARAMS = {"version": 1, "sides": [300, 1000], "quality": [70, 95]}
IMAGES = "images"


# ---------------------------------------------------------------- photos and row lists

def render_photo(job: tuple[str, int]) -> str:
    """Worker: one synthetic photo rescaled to 300-1000 px sides, written as JPEG; its CSV line."""
    from affectexp.data.synthetic import render_face
    from affectexp.data.synthetic.photo import apply_noise

    images_dir, index = job
    rng = np.random.default_rng([20261124, index])
    code = index % 8
    while True:  # a scale that puts both sides in 300..1000 exists unless the aspect is extreme
        face = render_face(rng, code)
        height, width = face.image.shape[:2]
        low, high = 300 / min(height, width), 1000 / max(height, width)
        if low <= high:
            break
    scale = rng.uniform(low, high)
    size = (int(round(width * scale)), int(round(height * scale)))
    image = apply_noise(rng, cv2.resize(face.image, size, interpolation=cv2.INTER_CUBIC))
    relative = f"{index % 64}/{index:06d}.jpg"
    quality = int(rng.integers(70, 96))
    cv2.imwrite(str(Path(images_dir, relative)), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    box = [v * scale for v in face.box]
    fields = [relative, *(f"{v:.1f}" for v in box), layout.format_landmarks(face.landmarks * scale), str(code),
              f"{face.valence:.4f}", f"{face.arousal:.4f}"]
    return ",".join(fields)


def ensure_photos(work: Path, count: int) -> list[str]:
    """The CSV lines of `count` photos under work/photos, generated on first use."""
    photos = work / "photos"
    marker = photos / "complete.json"
    wanted = {**PHOTO_PARAMS, "count": count}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return (photos / "lines.csv").read_text().splitlines()
    shutil.rmtree(photos, ignore_errors=True)
    for i in range(64):
        (photos / IMAGES / str(i)).mkdir(parents=True)
    print(f"generating {count} photos under {photos} ...", flush=True)
    with multiprocessing.get_context("spawn").Pool() as pool:
        lines = pool.map(render_photo, [(str(photos / IMAGES), i) for i in range(count)], chunksize=16)
    (photos / "lines.csv").write_text("\n".join(lines) + "\n")
    marker.write_text(json.dumps(wanted))
    return lines


def ensure_rows(work: Path, photo_lines: list[str], rows: int) -> Path:
    """An AffectNet-layout root of `rows` training rows cycling over the photos."""
    root = work / f"rows-{rows}"
    lists = root / layout.MANUAL_LISTS_DIR
    training = lists / layout.TRAINING_CSV
    if training.is_file():
        return root
    lists.mkdir(parents=True, exist_ok=True)
    images = root / layout.MANUAL_IMAGES_DIR
    if not images.exists():
        images.symlink_to(work / "photos" / IMAGES, target_is_directory=True)
    header = ",".join(layout.CSV_COLUMNS) + "\n"
    body = "".join(photo_lines[i % len(photo_lines)] + "\n" for i in range(rows))
    (lists / layout.VALIDATION_CSV).write_text(header)
    tmp = training.with_suffix(".tmp")
    tmp.write_text(header + body)
    os.replace(tmp, training)
    return root


# ---------------------------------------------------------------- the measured loops

class Clock:
    """Wall seconds and CPU seconds (this process and its finished children) since creation.

    CPU time is the cross-check on a shared machine: other users' load stretches wall time
    but hardly the CPU time a loop needs.
    """

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def read(self) -> dict:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": self._cpu() - self.cpu}


def table(root: Path):
    """(absolute paths, boxes (n, 4) int, codes) of a rows root, read with pandas as a notebook would."""
    import pandas as pd

    frame = pd.read_csv(root / layout.MANUAL_LISTS_DIR / layout.TRAINING_CSV)
    images = str(root / layout.MANUAL_IMAGES_DIR) + "/"
    boxes = frame[["face_x", "face_y", "face_width", "face_height"]].to_numpy().round().astype(int)
    return (images + frame["subDirectory_filePath"]).tolist(), boxes, frame["expression"].tolist()


def seed_loop(root: Path, size: int) -> dict:
    """(a) The seed notebook: per row imread gray, crop, resize, /255, append a row to a DataFrame."""
    import pandas as pd

    paths, boxes, codes = table(root)
    data = pd.DataFrame({"pixels": pd.Series(dtype=object), "emotion": pd.Series(dtype=int)})
    checkpoints = []
    clock = Clock()
    for i, (path, (x, y, w, h), code) in enumerate(zip(paths, boxes, codes), start=1):
        image = cv2.imread(path, 0)
        face = cv2.resize(image[max(y, 0):y + h, max(x, 0):x + w], (size, size)) / 255
        data = pd.concat([data, pd.DataFrame({"pixels": [face.ravel()], "emotion": [code]})], ignore_index=True)
        if i % 1000 == 0:
            checkpoints.append((i, time.perf_counter() - clock.wall))
    return {**clock.read(), "checkpoints": checkpoints}


def plain_loop(root: Path, size: int) -> dict:
    """(b) Full decode, crop, INTER_AREA into a preallocated uint8 array; one process."""
    cv2.setNumThreads(1)
    paths, boxes, _ = table(root)
    faces = np.zeros((len(paths), size, size), dtype=np.uint8)
    clock = Clock()
    for i, (path, (x, y, w, h)) in enumerate(zip(paths, boxes)):
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        faces[i] = cv2.resize(image[max(y, 0):y + h, max(x, 0):x + w], (size, size), interpolation=cv2.INTER_AREA)
    return clock.read()


def affectexp_run(root: Path, size: int, workers: int, work: Path) -> dict:
    """(c) run_preprocess on the rows root: from reading the CSV to the finished cache."""
    import logging

    from hydra import compose, initialize_config_dir

    import affectexp.config  # noqa: F401  (registers the config schemas)
    from affectexp.tasks.preprocess import run_preprocess

    logging.basicConfig(level=logging.WARNING)
    out = work / f"run-{root.name}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("preprocess", overrides=[
            f"paths.root={out}", "dataset=affectnet", f"dataset.root={root}", "classes=affectnet8",
            f"cache.size={size}", f"num_workers={workers}"])
    clock = Clock()
    summary = run_preprocess(cfg)
    result = {**clock.read(), "faces": summary.faces_written}  # the pool's workers are joined: their CPU counts
    shutil.rmtree(out, ignore_errors=True)
    return result


def measure(kind: str, root: Path, size: int, workers: int, work: Path) -> dict:
    """Run one measurement in this process; add peak RSS in MB: this process's (VmHWM), its
    largest worker's and this process plus its workers together (sampled)."""
    sampler = PeakMemory()
    sampler.start()
    if kind == "seed":
        result = seed_loop(root, size)
    elif kind == "plain":
        result = plain_loop(root, size)
    else:
        result = affectexp_run(root, size, workers, work)
    sampler.stop()
    return {**result, "rss_mb": rss_mb(field="VmHWM"), "worker_rss_mb": sampler.worker_mb,
            "total_rss_mb": sampler.total_mb}


def in_fresh_process(kind: str, root: Path, args, workers: int = 1) -> dict:
    """One measurement in a new interpreter, so that peak RSS and warm state are its own."""
    command = [sys.executable, __file__, "--measure", kind, "--root", str(root), "--size", str(args.size),
               "--workers", str(workers), "--work-dir", str(args.work_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report

def rate(result: dict, rows: int) -> float:
    return rows / result["seconds"]


def extrapolate_quadratic(checkpoints: list[tuple[int, float]], rows: int) -> float:
    """Seconds for `rows` from a least-squares fit t(n) = a n + b n^2 of measured (n, t) points."""
    n = np.array([c[0] for c in checkpoints], dtype=float)
    t = np.array([c[1] for c in checkpoints], dtype=float)
    (a, b), *_ = np.linalg.lstsq(np.stack([n, n * n], axis=1), t, rcond=None)
    return float(a * rows + b * rows * rows)


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"{'meets' if ok else 'MISSES'} target {'>=' if higher_is_better else '<='} {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "benchmark-preprocess")
    parser.add_argument("--photos", type=int, default=2000, help="distinct JPEG files (rows cycle over them)")
    parser.add_argument("--rows", type=int, default=20000, help="N: rows of the side-by-side comparison")
    parser.add_argument("--large-rows", type=int, default=100000, help="rows of the seed-vs-affectexp comparison")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds at N (medians are reported)")
    parser.add_argument("--size", type=int, default=48, help="face side in pixels (the seed notebook's: 48)")
    parser.add_argument("--seed-full", action="store_true", help="measure the seed loop at --large-rows too")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, args.size, args.workers, args.work_dir)))
        return

    cores = os.cpu_count() or 1
    load_at_start = os.getloadavg()[0]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    lines = ensure_photos(args.work_dir, args.photos)
    n, big = args.rows, args.large_rows
    roots = {rows: ensure_rows(args.work_dir, lines, rows) for rows in sorted({n, 4 * n, big})}
    for path in (args.work_dir / "photos" / IMAGES).rglob("*.jpg"):
        path.read_bytes()  # every loop starts with the photos in the page cache

    rounds: dict[str, list[dict]] = {"seed": [], "plain": [], "affectexp-1": [], f"affectexp-{cores}": []}
    for r in range(args.repeats):
        print(f"round {r + 1}/{args.repeats} at {n} rows ...", flush=True)
        rounds["seed"].append(in_fresh_process("seed", roots[n], args))
        rounds["plain"].append(in_fresh_process("plain", roots[n], args))
        rounds["affectexp-1"].append(in_fresh_process("affectexp", roots[n], args, 1))
        rounds[f"affectexp-{cores}"].append(in_fresh_process("affectexp", roots[n], args, cores))
    print(f"affectexp with {cores} workers at {4 * n} and {big} rows ...", flush=True)
    at_4n = in_fresh_process("affectexp", roots[4 * n], args, cores)
    at_big = at_4n if big == 4 * n else in_fresh_process("affectexp", roots[big], args, cores)
    seed_big = in_fresh_process("seed", roots[big], args) if args.seed_full else None

    def median_rate(name: str) -> float:
        return statistics.median(rate(result, n) for result in rounds[name])

    def median_cpu(name: str) -> float:
        """CPU seconds per 1000 rows, all processes of the run together."""
        return statistics.median(1000 * result["cpu_seconds"] / n for result in rounds[name])

    print()
    print(f"load average (1 min) at start {load_at_start:.1f}, at end {os.getloadavg()[0]:.1f} "
          "(other users' processes share these cores)")
    print(f"photos: {args.photos} JPEGs, 300-1000 px sides, faces cropped to {args.size}x{args.size} gray; "
          f"{cores} cores; medians of {args.repeats} interleaved rounds at N = {n} rows")
    print(f"{'':44}{'images/s':>10}{'s/1000 rows':>13}{'CPU s/1000':>12}  all rounds (images/s)")
    for name in rounds:
        per_round = ", ".join(f"{rate(result, n):.0f}" for result in rounds[name])
        print(f"  {name + f' @ {n}':42}{median_rate(name):10.0f}{1000 / median_rate(name):13.2f}"
              f"{median_cpu(name):12.2f}  {per_round}")
    if seed_big is not None:
        seed_big_seconds, how = seed_big["seconds"], "measured"
    else:
        checkpoints = [c for result in rounds["seed"] for c in result["checkpoints"]]
        seed_big_seconds, how = extrapolate_quadratic(checkpoints, big), f"extrapolated from the {n}-row runs' curve"
    print(f"  {f'seed @ {big} ({how})':42}{big / seed_big_seconds:10.0f}{1000 * seed_big_seconds / big:13.2f}")
    print(f"  {f'affectexp-{cores} @ {4 * n}':42}{rate(at_4n, 4 * n):10.0f}{1000 / rate(at_4n, 4 * n):13.2f}")
    print(f"  {f'affectexp-{cores} @ {big}':42}{rate(at_big, big):10.0f}{1000 / rate(at_big, big):13.2f}")

    per_process = median_rate("affectexp-1") / median_rate("plain")
    scaling = median_rate(f"affectexp-{cores}") / median_rate("affectexp-1")
    vs_seed = rate(at_big, big) / (big / seed_big_seconds)
    per_1000 = (1000 / rate(at_big, big)) / (1000 / median_rate(f"affectexp-{cores}"))
    n_rss = statistics.median(result["rss_mb"] for result in rounds[f"affectexp-{cores}"])
    n_total = statistics.median(result["total_rss_mb"] for result in rounds[f"affectexp-{cores}"])
    big_total = at_4n["total_rss_mb"]
    print()
    print("ratios:")
    print(f"  affectexp 1 worker / plain full-decode loop:      {per_process:5.2f}x  ({verdict(per_process, 1.1)})")
    print(f"    the same in CPU time (plain / affectexp CPU s): {median_cpu('plain') / median_cpu('affectexp-1'):5.2f}x")
    print(f"  affectexp {cores} workers / 1 worker:                 {scaling:5.2f}x  ({verdict(scaling, 1.8)})")
    print(f"  affectexp {cores} workers / seed loop at {big} rows: {vs_seed:5.2f}x  ({verdict(vs_seed, 4.0)})")
    print(f"  s/1000 rows at {big} / at {n}:                  {per_1000:5.2f}x  ({verdict(per_1000, 1.1, False)})")
    print(f"  peak RSS at {4 * n} / at {n} rows (parent):       {at_4n['rss_mb'] / n_rss:5.2f}x  "
          f"({n_rss:.0f} -> {at_4n['rss_mb']:.0f} MB; {verdict(at_4n['rss_mb'] / n_rss, 1.1, False)})")
    print(f"  peak RSS at {4 * n} / at {n} rows (parent + workers): {big_total / n_total:5.2f}x  "
          f"({n_total:.0f} -> {big_total:.0f} MB; {verdict(big_total / n_total, 1.1, False)}; "
          f"largest worker {at_4n['worker_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
