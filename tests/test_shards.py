"""Sharded preprocessing through a Hydra multirun, merged into the cache one run would write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from affectexp.tasks.preprocess import report_path_of, run_preprocess
from affectexp.data.shards import ShardError, shard_path
from conftest import compose_config, synthetic_overrides

REPO = Path(__file__).resolve().parents[1]


def overrides(synthetic_root: Path) -> list[str]:
    return [*synthetic_overrides(synthetic_root), "cache.size=32", "cache.chunk_rows=64"]


def test_two_shards_merge_into_the_unsharded_cache(synthetic_root, tmp_path):
    work = tmp_path / "work"
    cfg = compose_config("preprocess", work, [*overrides(synthetic_root), "num_workers=0"])
    cache = Path(cfg.cache.path)
    unsharded = run_preprocess(cfg)
    reference, reference_report = cache.read_bytes(), report_path_of(cache).read_text()
    cache.unlink()
    report_path_of(cache).unlink()

    # Two shards as two jobs of a Hydra multirun, exactly as a user (or a SLURM launcher) runs them.
    command = [sys.executable, "preprocess.py", "-m", "shard.index=0,1", "shard.count=2", f"paths.root={work}",
               "num_workers=1", *overrides(synthetic_root)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = [shard_path(cache, i, 2) for i in range(2)]
    assert all(path.is_file() for path in shards) and not cache.exists()

    merged = run_preprocess(compose_config("preprocess", work, [*overrides(synthetic_root), "merge=true",
                                                                "shard.count=2"]))
    # Same faces, order, columns and attributes: the file is byte for byte the unsharded one.
    assert cache.read_bytes() == reference
    assert report_path_of(cache).read_text() == reference_report
    assert (merged.written, merged.skipped, merged.rows_read) == (unsharded.written, unsharded.skipped,
                                                                  unsharded.rows_read)
    assert not any(path.exists() for path in shards)
    # The merged cache is an ordinary up-to-date cache: the unsharded command reuses it.
    assert run_preprocess(cfg).reused


def test_shard_settings_and_missing_or_foreign_shards_are_refused(synthetic_root, tmp_path):
    work = tmp_path / "work"

    def config(*extra: str):
        return compose_config("preprocess", work, [*overrides(synthetic_root), "num_workers=0", *extra])

    with pytest.raises(ShardError, match=r"shard.index: 2 is not in 0..1"):
        run_preprocess(config("shard.index=2", "shard.count=2"))
    assert not (work / "caches").exists()

    first = run_preprocess(config("shard.index=0", "shard.count=2"))
    assert first.cache_path.name.endswith(".shard-0-of-2.h5")
    with pytest.raises(ShardError, match=r"shard\(s\) \[1\] of 2 missing .*shard.index=<i> shard.count=2"):
        run_preprocess(config("merge=true", "shard.count=2"))
    with pytest.raises(ShardError, match=r"merge=true: shard.count is 1"):
        run_preprocess(config("merge=true"))

    run_preprocess(config("shard.index=1", "shard.count=2", "faces.margin=0.1"))  # other settings
    with pytest.raises(ShardError, match=r"shard-1-of-2.h5 was built from other inputs"):
        run_preprocess(config("merge=true", "shard.count=2"))
