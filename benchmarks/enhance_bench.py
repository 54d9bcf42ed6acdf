"""What default enhancement costs on a folder of good photos: the whole `datasetagent build`
with ``enhance: auto`` (the default) against the same build with ``enhance: off``, same run.

Photos, copied byte for byte: the OpenCV sample photos chosen as in ``corpus.photos`` (every
RGB JPEG at least 300 px a side, one of each stereo pair or edited copy) less the three that
OpenCV's deblurring tutorials blurred on purpose, the two scikit-learn photos (saved as JPEG,
quality 92), and, where installed (Debian ``lomiri-wallpapers-16.04``), the photographers'
wallpapers of Ubuntu 16.04 (1365×1074 to 5312×2988). Half go to each of two class folders.

Prints, for auto against off: the build time ratio (best of REPEATS each), the export size
ratio, and how many images auto changed (exported bytes differ from the source file), with
what tools. Goal (issue 10): time ≤ 1.3×, changed ≤ 5 %.

Usage: python benchmarks/enhance_bench.py [REPEATS]  (needs opencv-doc for most photos)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from PIL import Image

from corpus import _SECOND_OF_PAIR, OPENCV_DOC
from datasetagent.spec import ClassSpec, DatasetSpec

WALLPAPERS = Path("/usr/share/backgrounds")
#: Blurred on purpose by OpenCV's deblurring tutorials: samples of a defect, not good photos.
DEGRADED = {"licenseplate_motion", "text_defocus", "text_motion"}
CLASSES = ("first", "second")


def photo_files(root: Path) -> list[Path]:
    """Write the photo folder (one sub-folder per class); returns the files."""
    from sklearn.datasets import load_sample_images

    picked: list[tuple[str, bytes]] = []
    for k, arr in enumerate(load_sample_images().images):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=92)
        picked.append((f"sklearn{k}.jpg", buf.getvalue()))
    for path in sorted(OPENCV_DOC.rglob("*.jpg")) if OPENCV_DOC.is_dir() else []:
        if path.stem in _SECOND_OF_PAIR or path.stem in DEGRADED:
            continue
        with Image.open(path) as img:
            if img.mode == "RGB" and min(img.size) >= 300:
                picked.append((path.name, path.read_bytes()))
    for path in sorted(WALLPAPERS.glob("*_by_*.jpg")):
        picked.append((path.name, path.read_bytes()))
    files = []
    for k, (name, data) in enumerate(picked):
        dest = root / CLASSES[k % 2] / f"{k:03d}_{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        files.append(dest)
    return files


def build(spec: Path, photos: Path, run: Path) -> float:
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "datasetagent", "build", str(spec), "--source", str(photos)]
    start = time.perf_counter()
    out = subprocess.run(
        [*cmd, "-o", str(run), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"build failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return took


def exported(run: Path) -> list[tuple[Path, dict[str, object]]]:
    folder = run / "export" / "imagefolder"
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    return [(folder / str(m["file"]), m) for m in map(json.loads, lines)]


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = photo_files(root / "photos")
        source = {f.as_posix(): hashlib.sha256(f.read_bytes()).digest() for f in files}
        sizes = Counter(max(Image.open(f).size) for f in files)
        specs = {}
        for mode in ("off", "auto"):
            spec = DatasetSpec(
                name="good-photos",
                task="classification",
                classes=tuple(ClassSpec(name=c) for c in CLASSES),
                target_per_class=len(files),
            )
            spec = spec.model_copy(
                update={"image": spec.image.model_copy(update={"enhance": mode})}
            )
            specs[mode] = root / f"{mode}.yaml"
            specs[mode].write_text(spec.to_yaml())
        times: dict[str, list[float]] = {"off": [], "auto": []}
        for _ in range(repeats):
            for mode in ("off", "auto"):  # interleaved, so load on the machine hits both
                times[mode].append(build(specs[mode], root / "photos", root / mode))
        result = {mode: exported(root / mode) for mode in ("off", "auto")}
        size = {mode: sum(p.stat().st_size for p, _ in result[mode]) for mode in result}
        changed, tools = 0, Counter[str]()
        for path, line in result["auto"]:
            prov = line["provenance"]
            assert isinstance(prov, dict)
            if hashlib.sha256(path.read_bytes()).digest() != source[str(prov["location"])]:
                changed += 1
                steps = [s["name"] for s in prov["steps"] if s["name"] != "ssim_guard"]
                tools[",".join(steps) or "re-encoded"] += 1
        formats = Counter(p.suffix for p, _ in result["auto"])
    n = len(files)
    t_off, t_auto = min(times["off"]), min(times["auto"])
    print(f"{n} good photos (longest sides {min(sizes)}-{max(sizes)} px, ", end="")
    print(f"{sum(v for k, v in sizes.items() if k >= 2000)} of them >= 2000 px)")
    print(
        f"exported: off {len(result['off'])}, auto {len(result['auto'])}; formats {dict(formats)}"
    )
    print(f"build, enhance off (baseline): {t_off:.2f} s   (runs: {times['off']})")
    print(f"build, enhance auto:           {t_auto:.2f} s   (runs: {times['auto']})")
    print(f"time ratio auto/off: {t_auto / t_off:.2f}x  (goal <= 1.3x)")
    print(
        f"export size: off {size['off'] / 1e6:.1f} MB, auto {size['auto'] / 1e6:.1f} MB, ", end=""
    )
    print(f"ratio {size['auto'] / size['off']:.3f}x")
    print(f"changed by auto: {changed} of {n} ({changed / n:.1%}; goal <= 5%)  {dict(tools)}")


if __name__ == "__main__":
    main()
