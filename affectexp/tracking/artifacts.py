"""Files and data-set inputs recorded with a run."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.tracking import MlflowClient


@contextmanager
def artifact_dir() -> Iterator[Path]:
    """A scratch folder whose files are logged as artifacts of the active run on exit."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        yield path
        mlflow.log_artifacts(str(path))


def copy_run_report(run_id: str, folder: str | Path) -> None:
    """Copy the finished run's artifacts (config, plots, per-split metrics JSON) into `folder`,
    with metrics.json beside them: {"run_id": ..., "metrics": {name: last value}}. For the batch
    jobs whose output folder is what they leave behind (SageMaker's SM_OUTPUT_DATA_DIR)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(folder))
    metrics = MlflowClient().get_run(run_id).data.metrics
    (folder / "metrics.json").write_text(json.dumps({"run_id": run_id, "metrics": dict(sorted(metrics.items()))},
                                                    indent=2))


DIGEST_CHARS = 16  # MLflow keeps at most 36; 16 hex digits of the fingerprint identify a cache


class CacheDataset(MetaDataset):
    """A face cache as an MLflow dataset: its file, its content fingerprint as the digest and
    its split sizes as the profile (what the UI's Datasets column and dataset panel show).
    The faces stay in the cache; MLflow records only what identifies them."""

    def __init__(self, path: str, name: str, digest: str, split_sizes: Mapping[str, int]):
        with warnings.catch_warnings():
            # A local path is claimed by two registrations of the same LocalArtifactDatasetSource
            # (for "" and "file" schemes); MLflow warns and takes it, as wanted.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(path).resolve()))
        super().__init__(source, name=name, digest=digest[:DIGEST_CHARS])
        self._split_sizes = dict(split_sizes)

    @property
    def profile(self) -> Any | None:
        return {f"{split}_faces": size for split, size in self._split_sizes.items()}

    def to_dict(self) -> dict[str, str]:
        # MetaDataset records no profile of its own; the split sizes are this dataset's.
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def log_cache_input(path: str, name: str, digest: str, split_sizes: Mapping[str, int]) -> None:
    """Record the cache the active run trains on as its "training" dataset input, once: a
    resumed run that logs it again adds nothing."""
    dataset = CacheDataset(path, name, digest, split_sizes)
    run_id = mlflow.active_run().info.run_id
    logged = MlflowClient().get_run(run_id).inputs.dataset_inputs
    if not any(i.dataset.name == name and i.dataset.digest == dataset.digest for i in logged):
        mlflow.log_input(dataset, context="training")
