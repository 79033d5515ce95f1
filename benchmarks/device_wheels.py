"""Fetch, here, the wheels that benchmarks/device.py needs on a GPU machine with no network.

That machine's image holds JAX with CUDA, NumPy, h5py, OpenCV, pandas, SciPy, scikit-image,
PyYAML, requests, tqdm, rich and the like, but not Keras, Hydra, albumentations or MLflow's
client (which the training module imports for its tracking layer). This downloads those and
the dependencies the image lacks, for CPython 3.12 on manylinux x86_64, each at the version
installed in this environment: the versions the tests ran with. Unpinned, pip takes the newest
of each, which do not fit together (albucore 0.3 under albumentations 2.0.8, omegaconf 2.4
under Hydra 1.3). Hydra's parser, antlr4-python3-runtime 4.9.3, has no wheel on PyPI and is
built with `pip wheel`.

    python benchmarks/device_wheels.py .whl        # about 20 MB
    # on the GPU machine, with .whl carried along:
    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:. KERAS_BACKEND=jax python3 benchmarks/device.py --out device.json

google-auth (databricks-sdk's, under mlflow-skinny) declares cryptography, which the image
lacks; nothing on the benchmark's path imports it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# What the device image lacks, by distribution name: Keras and its tree library; Hydra; albumentations
# and its kernels; MLflow's client and its tracing, Databricks and OpenTelemetry dependencies.
PACKAGES = (
    "keras", "namex", "optree",
    "hydra-core", "omegaconf",
    "albumentations", "albucore", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
    "stringzilla", "simsimd",
    "mlflow-skinny", "mlflow-tracing", "databricks-sdk", "google-auth", "pyasn1", "pyasn1-modules",
    "cachetools", "fastapi", "starlette", "uvicorn", "gitpython", "gitdb", "smmap",
    "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto", "opentelemetry-semantic-conventions",
    "sqlparse", "python-dotenv", "importlib-metadata",
)
BUILT = "antlr4-python3-runtime"  # pure Python, published as a source distribution only
# pip matches a manylinux tag exactly: these cover the wheels of every package above.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def pinned(names) -> list[str]:
    """name==version of each distribution as installed here; a missing one stops with its name."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is not installed in this environment ({sys.executable}): "
                     "run this with the project's .venv (make install)")
    return pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="folder for the wheels (e.g. .whl, listed in .git/info/exclude)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", args.python_version, "--implementation", "cp", *platforms,
                    "--dest", str(args.dest), *pinned(PACKAGES)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(args.dest),
                    *pinned([BUILT])], check=True)
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(wheel.stat().st_size for wheel in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB, in {args.dest}")


if __name__ == "__main__":
    main()
