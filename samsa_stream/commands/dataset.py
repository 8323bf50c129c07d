"""``samsa-stream dataset``: write a labelled synthetic dataset (evaluation.scenes) for ``samsa-stream eval``."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from ..cli import common_options, settings_from
from ..errors import CommandError
from ..evaluation.scenes import SCENE_KINDS

_SIZE = re.compile(r"(\d+)[xX](\d+)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="write a labelled synthetic dataset for 'samsa-stream eval'",
                       description="Write COUNT labelled scenes of KIND into DIR as KIND-0000.npz, ... (members "
                                   "'cube' (H, W, B) float32 reflectance, 'wavelengths_nm', 'labels' (H, W) int32; "
                                   "seeds SEED..SEED+COUNT-1) and DIR/manifest.json, which 'samsa-stream eval' "
                                   "reads. Kinds: tiny (4-6 small targets of 3-60 px, some spectrally close to "
                                   "the background), scattered (one or two materials in 3-8 small parts each), "
                                   "phantom (frames of the phantom camera; ingest.phantom.* settings apply). A "
                                   "material has the same label value in every scene. Prints a JSON summary line.")
    common_options(p)
    p.add_argument("kind", choices=SCENE_KINDS, help="scene kind")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the dataset (created)")
    p.add_argument("--count", type=int, default=8, help="number of scenes (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    p.add_argument("--size", default="64x64", metavar="HxW", help="scene height x width in pixels (default 64x64)")
    p.add_argument("--bands", type=int, default=60, help="bands, 450-950 nm (default 60)")
    p.add_argument("--frames", type=int, default=1, help="phantom only: each item is a sequence of this many "
                   "consecutive camera frames in one multi-frame .npz ('cubes', per-frame 'labels'), for "
                   "evaluating tracking with eval --sequences (default 1: single frames)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty DIR (files of the same names are replaced, others kept)")
    p.set_defaults(handler=_run)


def _size(text: str) -> tuple[int, int]:
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise CommandError(f"--size must be HEIGHTxWIDTH in pixels, like 64x64; got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _run(args: argparse.Namespace) -> int:
    from ..evaluation import EvaluationError
    from ..evaluation.dataset import MANIFEST_FORMAT, MANIFEST_VERSION
    from ..evaluation.scenes import Scene, make_scene

    settings = settings_from(args)
    height, width = _size(args.size)
    if args.count < 1:
        raise CommandError(f"--count must be >= 1, got {args.count}")
    if args.frames < 1:
        raise CommandError(f"--frames must be >= 1, got {args.frames}")
    if args.frames > 1 and args.kind != "phantom":
        raise CommandError(f"--frames {args.frames}: only the phantom moves; {args.kind} scenes are single frames")
    sequence = args.frames > 1
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise CommandError(f"--out {out}: folder is not empty; choose an empty one or pass --force")

    def scene(seed: int) -> Scene:
        try:
            return make_scene(args.kind, seed, height, width, args.bands, phantom=settings.ingest.phantom)
        except EvaluationError as exc:
            raise CommandError(f"cannot make {args.kind} scenes: {exc}") from exc

    def frames_of(index: int) -> list[Scene]:
        """Item ``index``: one scene, or (sequences) the phantom's consecutive frames from seed + index x frames."""
        if not sequence:
            return [scene(args.seed + index)]
        start = args.seed + index * args.frames
        return [scene(start + k) for k in range(args.frames)]

    first = frames_of(0)  # bad sizes, bands or seeds fail here, before anything is written
    classes: dict[int, str] = {}
    images: list[dict[str, str | None]] = []
    labelled = 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        for index in range(args.count):
            items = first if index == 0 else frames_of(index)
            for item in items:
                for value, name in item.classes.items():
                    if classes.setdefault(value, name) != name:  # the scenes' label values are global by design
                        raise CommandError(f"label value {value} is {classes[value]!r} in one scene and {name!r} "
                                           "in another")
                labelled += int(np.count_nonzero(item.labels))
            wavelengths = items[0].wavelengths_nm.astype(np.float64, copy=False)
            if sequence:
                name = f"{args.kind}-seq-{index:04d}.npz"
                np.savez(out / name, cubes=np.stack([i.cube for i in items]).astype(np.float32, copy=False),
                         wavelengths_nm=wavelengths, labels=np.stack([i.labels for i in items]).astype(np.int32))
            else:
                name = f"{args.kind}-{index:04d}.npz"
                np.savez(out / name, cube=items[0].cube.astype(np.float32, copy=False), wavelengths_nm=wavelengths,
                         labels=items[0].labels.astype(np.int32, copy=False))
            images.append({"cube": name, "labels": None})
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": args.kind, "objects": "classes",
                    "min_area_px": 1, "skip": [0], "classes": {str(v): classes[v] for v in sorted(classes)},
                    "images": images}
        # Written last: a folder with a manifest holds every scene it lists.
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot be written ({exc.strerror or exc})") from exc
    print(json.dumps({"dataset": str(out / "manifest.json"), "kind": args.kind, "images": args.count,
                      "frames_per_image": args.frames,
                      "seeds": [args.seed, args.seed + args.count * args.frames - 1], "size": [height, width],
                      "bands": args.bands, "classes": manifest["classes"], "labelled_px": labelled}))
    return 0
