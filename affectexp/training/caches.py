"""Opening the face cache a run's config names, with errors that say how to fix it."""

from __future__ import annotations

from pathlib import Path

from affectexp.config import EvaluateConfig, TrainConfig
from affectexp.data.cache import CacheError, FaceCache


def preprocess_command(settings: TrainConfig | EvaluateConfig) -> str:
    """The preprocess.py command that builds the cache these settings ask for."""
    dataset = settings.dataset
    parts = [f"dataset={dataset['name']}"]
    if "root" in dataset and dataset["name"] != "synthetic":
        parts.append(f"dataset.root={dataset['root']}")
    cache = settings.cache
    parts += [f"classes={settings.classes.name}", f"cache.size={cache.size}", f"cache.color={cache.color}",
              f"cache.path={cache.path}"]
    return "python preprocess.py " + " ".join(parts)


def open_cache(settings: TrainConfig | EvaluateConfig) -> FaceCache:
    """settings.cache.path, opened; CacheError naming the preprocess.py command when it does not
    exist, or the rebuild when its schema version is not the one this code reads."""
    path = Path(settings.cache.path)
    if not path.exists():  # a folder is named as one by FaceCache
        raise CacheError(f"cache.path: {path} does not exist; build it with: {preprocess_command(settings)}")
    return FaceCache(path)


def open_checked_cache(settings: TrainConfig) -> FaceCache:
    """The configured cache, after checking that it exists and holds the configured classes
    and face shape, and some training faces."""
    cache = open_cache(settings)
    try:
        check_cache(cache, settings)
    except BaseException:
        cache.close()
        raise
    return cache


def check_cache(cache: FaceCache, settings: TrainConfig) -> None:
    classes, wanted = settings.classes, settings.cache
    if list(cache.class_names) != list(classes.names):
        raise CacheError(f"{cache.path}: the cache holds classes {cache.class_names} but classes={classes.name} "
                         f"asks for {list(classes.names)}; choose the matching classes or another cache.path")
    channels = 1 if str(wanted.color) == "gray" else 3
    if tuple(cache.face_shape) != (wanted.size, wanted.size, channels):
        height, width, depth = cache.face_shape
        raise CacheError(f"{cache.path}: the cache holds {height}x{width} {'gray' if depth == 1 else 'rgb'} faces "
                         f"but cache.size={wanted.size} cache.color={wanted.color} asks for others; pass "
                         f"cache.size={height} cache.color={'gray' if depth == 1 else 'rgb'} or another cache.path")
    if cache.split_size("train") == 0:
        raise CacheError(f"{cache.path}: the cache has no training faces")
