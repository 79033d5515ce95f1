"""Opening the face cache a config names, with errors that say how to fix it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from affectexp.data.cache import CacheError, FaceCache


def preprocess_command(cfg: DictConfig) -> str:
    """The preprocess.py command that builds the cache this config asks for."""
    parts = [f"dataset={cfg.dataset.name}"]
    if "root" in cfg.dataset and cfg.dataset.name != "synthetic":
        parts.append(f"dataset.root={cfg.dataset.root}")
    parts += [f"classes={cfg.classes.name}", f"cache.size={cfg.cache.size}", f"cache.color={cfg.cache.color}",
              f"cache.path={cfg.cache.path}"]
    return "python preprocess.py " + " ".join(parts)


def open_cache(cfg: DictConfig) -> FaceCache:
    """cfg.cache.path, opened; CacheError naming the preprocess.py command when it does not
    exist, or the rebuild when its schema version is not the one this code reads."""
    path = Path(cfg.cache.path)
    if not path.is_file():
        raise CacheError(f"cache.path: {path} does not exist; build it with: {preprocess_command(cfg)}")
    return FaceCache(path)


def open_checked_cache(cfg: DictConfig) -> FaceCache:
    """The configured cache, after checking that it exists and holds the configured classes."""
    cache = open_cache(cfg)
    path = cache.path
    if list(cache.class_names) != list(cfg.classes.names):
        cache.close()
        raise CacheError(f"{path}: the cache holds classes {cache.class_names} but classes={cfg.classes.name} "
                         f"asks for {list(cfg.classes.names)}; choose the matching classes or another cache.path")
    channels = 1 if str(cfg.cache.color) == "gray" else 3
    if tuple(cache.face_shape) != (cfg.cache.size, cfg.cache.size, channels):
        cache.close()
        height, width, depth = cache.face_shape
        raise CacheError(f"{path}: the cache holds {height}x{width} {'gray' if depth == 1 else 'rgb'} faces but "
                         f"cache.size={cfg.cache.size} cache.color={cfg.cache.color} asks for others; pass "
                         f"cache.size={height} cache.color={'gray' if depth == 1 else 'rgb'} or another cache.path")
    if cache.split_size("train") == 0:
        cache.close()
        raise CacheError(f"{path}: the cache has no training faces")
    return cache
