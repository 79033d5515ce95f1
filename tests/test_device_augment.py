"""Augmentation on the device (trainer.augment_on=device): albumentations' pixels for the same
parameters, albumentations' distributions for the parameters, the same augmentation per seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

SIZE = 48
STRONG = "conf/augmentation/strong.yaml"


def noise_faces(n: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """(n, SIZE, SIZE, channels) uint8 of random grey levels: any misplaced pixel shows."""
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, channels), dtype=np.uint8)


def compose(*transforms) -> dict:
    return {"__class_fullname__": "Compose", "transforms": list(transforms)}


def preset(path: str = STRONG) -> dict:
    from omegaconf import OmegaConf

    from conftest import compose_config

    cfg = compose_config("train", "unused", [f"augmentation={path.rsplit('/', 1)[1].removesuffix('.yaml')}",
                                           f"cache.size={SIZE}"])
    return OmegaConf.to_container(cfg.augmentation.transform, resolve=True)


def transform_named(serialized: dict, name: str) -> dict:
    """The preset's transform of that class, at the top or inside a OneOf."""
    for transform in serialized["transforms"]:
        if transform["__class_fullname__"] == name:
            return transform
        if "transforms" in transform and any(t["__class_fullname__"] == name for t in transform["transforms"]):
            return transform_named(transform, name)
    raise KeyError(name)


def on_device(transform: dict, faces: np.ndarray, seed: int = 0) -> np.ndarray:
    from affectexp.training.device_augment import AugmentFaces

    return np.asarray(AugmentFaces(transform, seed)(faces, training=True)).astype(np.uint8)


def numpy(tensor) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(tensor))


def as_float(faces: np.ndarray) -> np.ndarray:
    return faces.astype(np.float32)


# --- The pixels: albumentations' own functions with the same parameters --------------------------

@pytest.mark.parametrize("border", [0, 1, 2, 3, 4])  # constant, replicate, reflect, wrap, reflect_101
def test_an_affine_map_resamples_as_albumentations(border):
    from albumentations.augmentations.geometric import functional as fgeometric

    from affectexp.training.device_augment import BORDERS, Edge, affine_matrix, invert, resample, to_pixels

    faces = noise_faces(2)
    for params in [(1.1, 0.9, 3, -4, 12.0, 3.0, -2.0), (0.85, 1.15, -3, 2, -15.0, -5.0, 5.0)]:
        scale_x, scale_y, translate_x, translate_y, rotate, shear_x, shear_y = params
        matrix = fgeometric.create_affine_transformation_matrix(
            {"x": translate_x, "y": translate_y}, {"x": shear_x, "y": shear_y}, {"x": scale_x, "y": scale_y},
            rotate, fgeometric.center((SIZE, SIZE)))
        expected = np.stack([fgeometric.warp_affine(face, matrix, cv2.INTER_LINEAR, 7, border, (SIZE, SIZE))
                             for face in faces])
        forward = affine_matrix(*[np.full(2, v, np.float32) for v in params], SIZE, SIZE)
        got = numpy(to_pixels(resample(as_float(faces), [(invert(forward), Edge(BORDERS[border], 7.0))])))
        assert np.abs(got - faces).mean() > 40  # the faces did move
        difference = np.abs(got - expected.reshape(got.shape))  # float32 and OpenCV's rounding part at .5
        assert difference.max() <= 1 and np.mean(difference > 0) < 0.005


def test_flips_move_whole_pixels():
    faces = noise_faces(3, channels=3)
    flips = [{"__class_fullname__": "HorizontalFlip", "p": 1.0}, {"__class_fullname__": "VerticalFlip", "p": 1.0}]
    np.testing.assert_array_equal(on_device(compose(flips[0]), faces), faces[:, :, ::-1])
    np.testing.assert_array_equal(on_device(compose(*flips), faces), faces[:, ::-1, ::-1])


def test_a_resized_crop_is_albumentations_within_a_grey_level():
    """cv2.resize interpolates in fixed point: a grey level at the most; at the crop's edge it repeats
    the edge, and so does the device (the crop's window)."""
    from affectexp.training.device_augment import Edge, invert, resample, resized_crop_matrix, to_pixels

    faces = noise_faces(3)
    crops = [(3, 5, 40, 38), (0, 0, SIZE, SIZE), (8, 2, 36, 44)]
    expected = np.stack([cv2.resize(face[y:y + h, x:x + w], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
                         for face, (x, y, w, h) in zip(faces, crops)])[..., None]
    x_min, y_min, width, height = (np.array(v, np.float32) for v in zip(*crops))
    forward = resized_crop_matrix(x_min, y_min, width, height, SIZE, SIZE)
    window = (x_min, y_min, x_min + width - 1, y_min + height - 1)
    got = numpy(to_pixels(resample(as_float(faces), [(invert(forward), Edge(window=window))])))
    difference = np.abs(got - expected)
    assert difference.max() <= 1 and difference.mean() < 0.5
    np.testing.assert_array_equal(got[1], expected[1])  # the whole face: nothing moves


def smooth_faces(n: int, seed: int = 0) -> np.ndarray:
    """(n, SIZE, SIZE, 1) uint8 faces of smooth shading over 0..255, as faces are: where neighbours
    are alike, resampling once or twice differs by little."""
    rng = np.random.default_rng(seed)
    shading = np.stack([cv2.GaussianBlur(rng.random((SIZE, SIZE), np.float32), (0, 0), 3) for _ in range(n)])
    low, high = shading.min(axis=(1, 2), keepdims=True), shading.max(axis=(1, 2), keepdims=True)
    return np.round((shading - low) / (high - low) * 255).astype(np.uint8)[..., None]


AFFINES = [(0.85, 0.9, 4, -3, 15.0, 4.0, -3.0), (1.1, 1.05, -4, 2, -12.0, -5.0, 5.0)]  # one per face
CROPS = [(6, 4, 36, 40), (2, 8, 40, 34)]  # x, y, width, height


def theirs_affine(face: np.ndarray, params, border: int) -> np.ndarray:
    from albumentations.augmentations.geometric import functional as fgeometric

    scale_x, scale_y, translate_x, translate_y, rotate, shear_x, shear_y = params
    matrix = fgeometric.create_affine_transformation_matrix(
        {"x": translate_x, "y": translate_y}, {"x": shear_x, "y": shear_y}, {"x": scale_x, "y": scale_y},
        rotate, fgeometric.center((SIZE, SIZE)))
    return fgeometric.warp_affine(face, matrix, cv2.INTER_LINEAR, 7, border, (SIZE, SIZE)).reshape(face.shape)


def theirs_crop(face: np.ndarray, crop) -> np.ndarray:
    x, y, width, height = crop
    return cv2.resize(face[y:y + height, x:x + width], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).reshape(face.shape)


def crop_move():
    from affectexp.training.device_augment import Edge, invert, resized_crop_matrix

    x_min, y_min, width, height = (np.array(v, np.float32) for v in zip(*CROPS))
    window = (x_min, y_min, x_min + width - 1, y_min + height - 1)
    return invert(resized_crop_matrix(x_min, y_min, width, height, SIZE, SIZE)), Edge(window=window)


def affine_move(params, border: int):
    from affectexp.training.device_augment import BORDERS, Edge, affine_matrix, invert

    forward = affine_matrix(*[np.array(v, np.float32) for v in zip(*params)], SIZE, SIZE)
    return invert(forward), Edge(BORDERS[border], 7.0)


@pytest.mark.parametrize("later", [0, 1, 2, 4])  # constant, replicate, reflect, reflect_101
@pytest.mark.parametrize("earlier", ["crop", 1, 2, 4])
def test_an_affine_read_through_a_crop_or_affine_is_albumentations_within_a_few_grey_levels(earlier, later):
    """Resampled once where albumentations resamples (and rounds) twice, each transform reading
    beyond its input's edge as its border says: a few grey levels on a smooth face."""
    from affectexp.training.device_augment import resample, to_pixels

    faces = smooth_faces(2)
    if earlier == "crop":
        first, middle = crop_move(), [theirs_crop(face, crop) for face, crop in zip(faces, CROPS)]
    else:
        first, middle = affine_move(AFFINES[::-1], earlier), [theirs_affine(face, params, earlier)
                                                               for face, params in zip(faces, AFFINES[::-1])]
    expected = np.stack([theirs_affine(face, params, later) for face, params in zip(middle, AFFINES)])
    got = numpy(to_pixels(resample(as_float(faces), [first, affine_move(AFFINES, later)])))
    difference = np.abs(got - expected)
    assert np.abs(got - faces).mean() > 10  # the faces did move
    assert difference.max() <= 4 and np.mean(difference > 2) < 0.01


def test_an_affine_after_a_crop_repeats_the_crop_edge_as_albumentations():
    """Beyond a crop, an Affine with replicate reads the crop's edge, not the face around the crop."""
    from affectexp.training.device_augment import resample, to_pixels

    faces = np.zeros((2, SIZE, SIZE, 1), np.uint8)  # 0 around each crop, 200 within it
    for face, (x, y, width, height) in zip(faces, CROPS):
        face[y:y + height, x:x + width] = 200
    expected = np.stack([theirs_affine(theirs_crop(face, crop), params, 1)
                         for face, crop, params in zip(faces, CROPS, AFFINES)])
    assert (expected == 200).all()
    got = numpy(to_pixels(resample(as_float(faces), [crop_move(), affine_move(AFFINES, 1)])))
    np.testing.assert_array_equal(got, expected)


def test_geometric_transforms_resample_together_unless_a_border_draws_edges_inside():
    from affectexp.training.device_augment import DevicePlan

    def affine(border: int) -> dict:
        return {"__class_fullname__": "Affine", "rotate": [-10, 10], "border_mode": border, "p": 1.0}

    crop = {"__class_fullname__": "RandomResizedCrop", "size": [SIZE, SIZE], "p": 1.0}
    flip = {"__class_fullname__": "HorizontalFlip", "p": 0.5}
    brightness = {"__class_fullname__": "RandomBrightnessContrast", "p": 1.0}
    plan = DevicePlan(compose(flip, crop, affine(1), affine(0), affine(4), affine(3), flip, brightness, affine(2)))
    stages = [[(type(t).__name__, t.border) for t in stage.transforms] if hasattr(stage, "transforms")
              else type(stage.transform).__name__ for stage in plan.stages]
    assert stages == [
        [("Flip", "replicate"), ("ResizedCrop", "replicate"), ("Affine", "replicate"), ("Affine", "constant")],
        [("Affine", "reflect_101")], [("Affine", "wrap")], [("Flip", "replicate")],
        "BrightnessContrast", [("Affine", "reflect")]]
    assert len(DevicePlan(preset()).stages[0].transforms) == 3  # strong: flip, crop and Affine resampled once


def test_brightness_contrast_noise_and_holes_are_albumentations_exactly():
    import albucore
    from albumentations.augmentations.dropout import functional as fdropout
    from albumentations.augmentations.pixel import functional as fpixel

    from affectexp.training.device_augment import add_noise, brightness_contrast, drop_holes

    faces = noise_faces(3, channels=3)
    alpha, beta = np.array([0.7, 1.0, 1.29], np.float32), np.array([-40.5, 0.0, 76.2], np.float32)
    got = numpy(brightness_contrast(as_float(faces), alpha, beta))
    for face, a, b, result in zip(faces, alpha, beta, got):
        np.testing.assert_array_equal(result, albucore.multiply_add(face, float(a), float(b)))
    noise = np.random.default_rng(1).normal(0, 12, faces.shape).astype(np.float32)
    got = numpy(add_noise(as_float(faces), noise))
    np.testing.assert_array_equal(got, np.stack([fpixel.add_noise(f, n) for f, n in zip(faces, noise)]))
    holes = np.array([[[2, 3, 12, 20], [30, 30, 47, 40]], [[0, 0, 48, 5], [9, 9, 10, 10]],
                      [[5, 5, 6, 6], [40, 1, 45, 30]]], np.float32)
    active = np.array([[True, True], [True, False], [False, True]])
    got = numpy(drop_holes(as_float(faces), holes, active, np.array([10, 20, 30], np.float32)))
    for face, face_holes, on, result in zip(faces, holes.astype(int), active, got):
        expected = fdropout.cutout(face, face_holes[on], (10, 20, 30), np.random.default_rng(0))
        np.testing.assert_array_equal(result, expected)


def test_gaussian_blur_is_albumentations_kernel_through_opencv():
    from albumentations.augmentations.blur import functional as fblur

    from affectexp.training.device_augment import gaussian_blur

    faces = noise_faces(3)
    sigmas, sizes = np.array([0.5, 1.7, 3.0], np.float32), np.array([3, 5, 5], np.float32)
    got = numpy(gaussian_blur(as_float(faces), sigmas, sizes, 5))
    for face, sigma, size, result in zip(faces, sigmas, sizes, got):
        kernel = fblur.create_gaussian_kernel_1d(float(sigma), int(size))
        expected = cv2.sepFilter2D(face, -1, kernel, kernel)
        assert np.abs(result[..., 0] - expected).max() <= 1


# --- The draws: albumentations' distributions ------------------------------------------------------

DRAWS = 4000


def ks_distance(got: np.ndarray, expected: np.ndarray) -> float:
    """The largest gap between the two samples' cumulative distributions."""
    values = np.union1d(got, expected)
    cdf = [np.searchsorted(np.sort(sample), values, side="right") / len(sample) for sample in (got, expected)]
    return float(np.abs(cdf[0] - cdf[1]).max())


def assert_same_distribution(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Kolmogorov-Smirnov at a 0.1% level: two samples of one distribution part by more than
    `critical` once in a thousand seeds."""
    distance = ks_distance(got, expected)
    critical = 1.95 * np.sqrt((len(got) + len(expected)) / (len(got) * len(expected)))
    assert distance <= critical, (f"{what}: distributions {distance:.3f} apart (at most {critical:.3f}); "
                                     f"quartiles {np.quantile(got, [.25, .5, .75])} vs albumentations' "
                                     f"{np.quantile(expected, [.25, .5, .75])}")


def device_transform(transform: dict):
    """(the on-device transform object, albumentations' own) of one serialised transform."""
    import albumentations as A

    from affectexp.training.device_augment import GEOMETRIC, PIXEL

    built = A.from_dict({"transform": transform})
    name = type(built).__name__
    return (GEOMETRIC.get(name) or PIXEL[name])(built), built


def draws(seed: int = 0):
    import keras

    from affectexp.training.device_augment import Draw

    return Draw(keras.random.SeedGenerator(seed), DRAWS)


def albumentations_params(built, image: np.ndarray) -> list[dict]:
    built.set_random_seed(0)
    return [built.get_params_dependent_on_data({"shape": image.shape}, {"image": image}) for _ in range(DRAWS)]


def test_affine_draws_albumentations_maps():
    transform = transform_named(preset(), "Affine")
    ours, theirs = device_transform(transform)
    forward = [numpy(v) for v in ours.forward(draws(), SIZE, SIZE)[0]]
    reference = np.array([p["matrix"][:2].ravel() for p in albumentations_params(theirs, noise_faces(1)[0])])
    for index, name in enumerate("abcdef"):
        assert_same_distribution(forward[index], reference[:, index], f"Affine coefficient {name}")


def test_resized_crop_draws_albumentations_crops():
    ours, theirs = device_transform(transform_named(preset(), "RandomResizedCrop"))
    (a, _, c, _, e, f), edge = ours.forward(draws(), SIZE, SIZE)
    x_min, y_min, x_max, y_max = (numpy(v) for v in edge.window)
    width, height = x_max - x_min + 1, y_max - y_min + 1
    # The map resizes that window to the face.
    np.testing.assert_allclose(numpy(a), SIZE / width, rtol=1e-6)
    np.testing.assert_allclose(numpy(e), SIZE / height, rtol=1e-6)
    np.testing.assert_allclose(numpy(c), (0.5 - x_min) * SIZE / width - 0.5, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(numpy(f), (0.5 - y_min) * SIZE / height - 0.5, rtol=1e-5, atol=1e-4)
    crops = np.array([p["crop_coords"] for p in albumentations_params(theirs, noise_faces(1)[0])])
    for got, expected, name in [(width, crops[:, 2] - crops[:, 0], "width"), (height, crops[:, 3] - crops[:, 1], "height"),
                                (x_min, crops[:, 0], "x_min"), (y_min, crops[:, 1], "y_min")]:
        assert_same_distribution(got, expected, f"crop {name}")


@pytest.mark.parametrize("name", ["RandomBrightnessContrast", "GaussianBlur", "GaussNoise", "CoarseDropout"])
def test_pixel_transforms_change_faces_as_albumentations_does(name):
    """The same probe face through the transform DRAWS times, here and by albumentations: what a
    face becomes is distributed alike."""
    import albumentations as A

    transform = {**transform_named(preset(), name), "p": 1.0}
    probe = np.full((1, SIZE, SIZE, 1), 128, np.uint8)
    probe[0, :SIZE // 2] = 60
    probe[0, SIZE // 2, SIZE // 2] = 255  # a point: blur spreads it
    got = on_device(compose(transform), np.repeat(probe, DRAWS, axis=0)).astype(np.float32)
    theirs = A.from_dict({"transform": transform})
    theirs.set_random_seed(0)
    expected = np.stack([theirs(image=probe[0])["image"] for _ in range(DRAWS)]).reshape(got.shape).astype(np.float32)
    summaries = {
        "dark half": lambda x: x[:, 1:SIZE // 2 - 1].mean(axis=(1, 2, 3)),
        "light half": lambda x: x[:, SIZE // 2 + 1:-1].mean(axis=(1, 2, 3)),
        "point": lambda x: x[:, SIZE // 2, SIZE // 2, 0],
        "spread": lambda x: x[:, SIZE // 2 + 2:].std(axis=(1, 2, 3)),
    }
    for what, summary in summaries.items():
        assert_same_distribution(summary(got), summary(expected), f"{name}, {what}")


def test_each_transform_applies_with_its_probability_and_one_of_chooses_by_theirs():
    faces = np.repeat(noise_faces(1), DRAWS, axis=0)
    flipped = on_device(compose({"__class_fullname__": "HorizontalFlip", "p": 0.3}), faces)
    assert abs(np.mean([np.array_equal(f, faces[0, :, ::-1]) for f in flipped]) - 0.3) < 0.03
    flat = np.full((DRAWS, SIZE, SIZE, 1), 128, np.uint8)
    one_of = {"__class_fullname__": "OneOf", "p": 0.8, "transforms": [
        {"__class_fullname__": "GaussianBlur", "blur_limit": [3, 5], "p": 0.25},  # leaves a flat face as it is
        {"__class_fullname__": "GaussNoise", "std_range": [0.05, 0.1], "p": 0.75}]}
    noisy = on_device(compose(one_of), flat).std(axis=(1, 2, 3)) > 1
    assert abs(noisy.mean() - 0.8 * 0.75) < 0.03


def test_the_strong_preset_changes_faces_as_albumentations_does(built_cache):
    """The whole preset on the shared cache's faces: how much each face changes is distributed as
    with albumentations (composed resampling and other random numbers allow a few grey levels)."""
    import albumentations as A

    from affectexp.data.cache import FaceCache

    with FaceCache(built_cache[1].cache.path) as cache:
        faces = np.repeat(cache.read_faces("train", 0, 200), 10, axis=0)
    transform = preset()
    got = on_device(transform, faces)
    theirs = A.from_dict({"transform": transform})
    theirs.set_random_seed(0)
    expected = np.stack([theirs(image=face)["image"].reshape(face.shape) for face in faces])
    change = {name: np.abs(x.astype(np.float32) - faces).mean(axis=(1, 2, 3)) for name, x in
              (("device", got), ("albumentations", expected))}
    assert_same_distribution(change["device"], change["albumentations"], "mean change per face")
    # Left alone when no transform applies: the product of each one's 1 - p. (albumentations' own
    # share is higher, 0.0125 against 0.0054 here: its draws of successive transforms are not
    # independent.)
    untouched = np.prod([1 - t.get("p", 0.5) for t in transform["transforms"]])
    assert abs(np.mean(change["device"] == 0) - untouched) < 3 * np.sqrt(untouched / len(faces))


# --- Seeds, inference and the config ------------------------------------------------------------

def test_the_same_seed_augments_alike_and_inference_leaves_faces_alone():
    from affectexp.training.device_augment import AugmentFaces

    faces, transform = noise_faces(8), preset()
    first, again, other = AugmentFaces(transform, 3), AugmentFaces(transform, 3), AugmentFaces(transform, 4)
    batches = [numpy(first(faces, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(batches[0], numpy(again(faces, training=True)))
    assert not np.array_equal(batches[0], batches[1])  # the next batch draws anew
    assert not np.array_equal(batches[0], numpy(other(faces, training=True)))
    np.testing.assert_array_equal(numpy(first(faces)), faces.astype(np.float32))


@pytest.mark.parametrize(("transform", "message"), [
    ({"__class_fullname__": "ColorJitter", "p": 1.0}, "ColorJitter has no on-device form"),
    ({"__class_fullname__": "Affine", "fit_output": True, "p": 1.0}, "fit_output"),
    ({"__class_fullname__": "CoarseDropout", "fill": "random", "p": 1.0}, "CoarseDropout's fill 'random'"),
    ({"__class_fullname__": "OneOf", "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 1}], "p": 1.0},
     "HorizontalFlip inside OneOf"),
    ({"__class_fullname__": "NoSuchTransform", "p": 1.0}, "no transform 'NoSuchTransform'"),
])
def test_a_preset_without_an_on_device_form_stops_at_start(transform, message):
    from affectexp.errors import ConfigError
    from affectexp.training.device_augment import check_device_transform

    with pytest.raises(ConfigError, match=rf"augmentation.transform: .*{message}.*"):
        check_device_transform(compose(transform), SIZE)


def test_a_crop_to_another_size_stops_before_training_naming_both_sizes(built_cache):
    """cache.size=48 with a crop to 32 px (augmentation=strong's size is cache.size's): one line at
    start, and the layer itself refuses it too."""
    from mlflow.tracking import MlflowClient

    from affectexp.errors import ConfigError
    from affectexp.tasks.train import train

    from conftest import train_config

    message = r"RandomResizedCrop's size \[32, 32\] is not the faces' \[48, 48\]"
    cfg = train_config(built_cache[1], ["augmentation=strong", "trainer.augment_on=device",
                                        "augmentation.transform.transforms.1.size=[32,32]", "logger.run_name=crop32"])
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    assert experiment is None or not client.search_runs([experiment.experiment_id], "attributes.run_name = 'crop32'")
    crop = {"__class_fullname__": "RandomResizedCrop", "size": [32, 32], "p": 1.0}
    with pytest.raises(ConfigError, match=message):
        on_device(compose(crop), noise_faces(1))


# --- In train.py ---------------------------------------------------------------------------------

def test_the_device_path_reads_the_faces_and_labels_of_the_unaugmented_host_path(built_cache):
    """With trainer.augment_on=device, train.py's batches are augmentation=none's, bit for bit and
    in the same order each epoch, with no augmenting process: only the model augments."""
    from affectexp.data.cache import FaceCache
    from affectexp.tasks.train import make_batches, read_config

    from conftest import train_config, worker_pids

    def batches_of(overrides):
        settings, _ = read_config(train_config(built_cache[1], ["trainer.balance=oversample", *overrides]))
        return make_batches(cache, settings.trainer, settings.augmentation.transform, tuple(settings.head.outputs))

    with FaceCache(built_cache[1].cache.path) as cache:
        before = worker_pids()
        device, device_val = batches_of(["augmentation=strong", "trainer.augment_on=device"])
        host, host_val = batches_of(["augmentation=none"])
        assert device.augment is None and len(device) == len(host)
        for epoch in (0, 3):
            device.set_epoch(epoch)
            host.set_epoch(epoch)
            for index in range(len(device)):
                for ours, theirs in zip(device[index], host[index], strict=True):
                    np.testing.assert_array_equal(ours, theirs)
        assert worker_pids() == before
        for batches in (device, device_val, host, host_val):
            batches.close()


def test_a_run_augmented_on_the_device_logs_the_face_model_and_its_samples(built_cache):
    """Trained with XLA and a multi-task head: the run records where it augmented, shows the
    device's augmentations, and logs the face model alone (Keras' own layers, the head's names)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from affectexp.inference.model import load_face_model, logged_model_uri
    from affectexp.tasks.train import train

    from conftest import train_config

    cfg = train_config(built_cache[1], ["augmentation=strong", "trainer.augment_on=device", "trainer.jit_compile=true",
                                        "head=multitask", "trainer.epochs=2", "trainer.steps_per_epoch=3",
                                        "logger.run_name=on_device"])
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'on_device'")
    assert run.info.status == "FINISHED" and run.data.params["trainer.augment_on"] == "device"
    assert {"train/loss", "train/accuracy", "val/accuracy", "test/accuracy"} <= set(run.data.metrics)
    assert "augmentation_samples.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    logged = load_face_model(logged_model_uri(run.info.run_id)).keras_model
    assert sorted(logged.output_names) == ["affect", "expression"]
    assert all(type(layer).__module__.startswith("keras.") for layer in logged.layers)
    assert "device_augmentation" not in [layer.name for layer in logged.layers]


def test_the_preset_traces_with_the_batch_size_known():
    """TensorFlow's graph mode, with and without XLA, where the batch's size is part of the traced
    shape (a dataset batched with drop_remainder, a replica's share): every stage, every face."""
    import tensorflow as tf

    from affectexp.training.device_augment import AugmentFaces

    layer, faces = AugmentFaces(preset(), 0), noise_faces(6)
    for jit in (False, True):
        augmented = tf.function(lambda x: layer(x, training=True), jit_compile=jit)(tf.constant(faces)).numpy()
        assert augmented.shape == faces.shape and 0 <= augmented.min() <= augmented.max() <= 255
        assert np.array_equal(augmented, np.round(augmented))
