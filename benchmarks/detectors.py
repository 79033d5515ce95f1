"""Face detectors on photos whose boxes are known: recall at IoU >= 0.5, speed, and the box
calibration (conf/detector/*.yaml's box_scale, box_shift) that turns each detector's boxes into
boxes drawn the way the data set's are.

    .venv/bin/python benchmarks/detectors.py [--count 200] [--list PATH --images DIR]

Default photos: the embedded synthetic set's test list (data/synthetic/..., made by
`python preprocess.py`), whose boxes follow AffectNet's; --list/--images measure on any
AffectNet-style list instead (e.g. real AffectNet's validation.csv). Each detector is measured
with its boxes as it draws them (box_scale 1, box_shift 0) and with the calibration fitted here
(the median ratio of the known box to the detected one, and the median offset of the centres,
over the faces found at IoU >= 0.2); the fitted values are printed for the YAML files.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYNTHETIC = REPO / "data" / "synthetic"


def known_faces(list_path: Path, images: Path, count: int) -> list[tuple]:
    """(RGB photo, known box) of the first `count` rows of an AffectNet-style list."""
    from affectexp.inference.inputs import Frame, read_photo

    faces = []
    with open(list_path, newline="") as handle:
        for row in list(csv.DictReader(handle))[:count]:
            photo = read_photo(images / row["subDirectory_filePath"])
            if isinstance(photo, Frame):
                faces.append((photo.image, tuple(float(row[k]) for k in ("face_x", "face_y", "face_width",
                                                                             "face_height"))))
    return faces


def fitted_calibration(pairs: list[tuple]) -> tuple[list[float], list[float]]:
    """box_scale and box_shift from (known, detected) box pairs: medians of the size ratios and
    of the centre offsets in fractions of the detected box."""
    scale = [statistics.median(k[2] / d[2] for k, d in pairs), statistics.median(k[3] / d[3] for k, d in pairs)]
    shift = [statistics.median(((k[0] + k[2] / 2) - (d[0] + d[2] / 2)) / d[2] for k, d in pairs),
             statistics.median(((k[1] + k[3] / 2) - (d[1] + d[3] / 2)) / d[3] for k, d in pairs)]
    return [round(v, 2) for v in scale], [round(v, 2) for v in shift]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--list", type=Path, default=SYNTHETIC / "Manually_Annotated_file_lists" / "validation.csv")
    parser.add_argument("--images", type=Path, default=SYNTHETIC / "Manually_Annotated_Images")
    args = parser.parse_args()
    if not args.list.is_file():
        sys.exit(f"{args.list} does not exist: run `python preprocess.py` first, or pass --list and --images")

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from affectexp.inference.detectors import iou

    faces = known_faces(args.list, args.images, args.count)
    print(f"{len(faces)} photos of {args.list}\n")
    print("| detector | boxes | recall (IoU >= 0.5) | ms / photo | box_scale | box_shift |")
    print("|---|---|---|---|---|---|")
    for config in sorted((REPO / "conf" / "detector").glob("*.yaml")):
        node = OmegaConf.load(config)
        raw = instantiate(node, box_scale=[1.0, 1.0], box_shift=[0.0, 0.0])
        start = time.perf_counter()
        detections = [raw.detect(image) for image, _ in faces]
        ms = 1000 * (time.perf_counter() - start) / len(faces)
        pairs = []
        for (_, known), found in zip(faces, detections):
            best = max(found, key=lambda d: iou(known, d.box), default=None)
            if best is not None and iou(known, best.box) >= 0.2:
                pairs.append((known, best.box))
        scale, shift = fitted_calibration(pairs) if pairs else ([1.0, 1.0], [0.0, 0.0])
        configured = instantiate(node)
        for label, detector, boxes in (("as drawn", raw, detections),
                                       ("configured", configured, [configured.detect(image) for image, _ in faces])):
            found = sum(any(iou(known, d.box) >= 0.5 for d in found) for (_, known), found in zip(faces, boxes))
            print(f"| {config.stem} | {label} | {found}/{len(faces)} = {found / len(faces):.3f} | {ms:.1f} | "
                  f"{list(detector.box_scale)} | {list(detector.box_shift)} |")
        print(f"| {config.stem} | fitted here | | | {scale} | {shift} |")


if __name__ == "__main__":
    main()
