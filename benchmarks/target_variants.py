"""Table 1 on other targets made of the same people, measured on validation subjects: whether each
still poses the paper's problem (Only source at least 1.3x Only target) and how much of its gap
self-training closes, beside the target as rendered.

    python benchmarks/target_variants.py --json docs/results/cue_target.json   # as-rendered, facing-cues
    python benchmarks/target_variants.py --targets source-bodies --json docs/results/source_bodies_target.json
    python benchmarks/target_variants.py --targets worse-camera --json docs/results/worse_camera_target.json
    python benchmarks/target_variants.py --targets low-contrast --json docs/results/low_contrast_target.json
    python benchmarks/target_variants.py --targets as-rendered \
        --init-checkpoint runs/source-12ep/pretrain/model.pt --json docs/results/source_12_epochs_target.json
    python jobs/prepare_data.py synthetic --domain synthetic-source --split train --n 6000 \
        --style 'flesh_mm=[40,110]' --out runs/flesh/synthetic-source-train-n6000-flesh40-110
    python benchmarks/target_variants.py --targets fleshed --storage runs/tv_fleshed \
        --init-checkpoint runs/flesh/source-flesh/pretrain/model.pt \
        --source runs/flesh/synthetic-source-train-n6000-flesh40-110 --json docs/results/fleshed_target.json

The targets (``TARGETS``): the benchmark's as rendered, whose flat bodies look alike from the front
and the back; ``facing-cues``, the same bodies with the back of the head drawn as hair when a body
faces away, and shoes; ``source-bodies``, the people drawn as the source draws them (lit, clothed, a
bystander in half the frames: ``synthetic.LOOKS["bodies"]``) over the target's rooms, through its
camera: a gap of rooms, camera effects and geometry alone, with nothing about the people hidden
(``benchmarks/looks_and_geometry.py`` measures each part of the gap for a fixed model); and
``worse-camera``, those again through more blur, noise and colour cast than the target's camera
(blur 0.8-2 px, noise 8-20 grey levels, cast 0.4 against 0-1.2, 2-8 and 0.15); and
``low-contrast``, the source's bodies at a fifth to a third of the contrast; ``fleshed``, the
benchmark's target with torsos 40-110 mm broader than their hip joints (``flesh_mm``). Every target
is the same draws of the target's *training* split: subjects S11-S13 are the unlabeled target, the
first 1,000 frames of S14-S15 the frames scored. The test split (S16, S17) is never read, so that the
choice of benchmark is not made on it. Each target goes through ``jobs/experiments.py --config
configs/experiments/bench.yaml`` (the tables' command) with one seed and Table 1's methods alone; its
run and report are under ``--storage``. ``--init-checkpoint`` starts every method from another
source model than the shipped one (the bench's ``init_checkpoint``), to see whether a stronger one
changes the share of the gap self-training closes; ``--source`` gives the adapting methods the
labeled source that model was trained on, where it is not the bench's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from dfa_ray.cli import print_json
from dfa_ray.data.records import write_records
from dfa_ray.data.synthetic import LOOKS, STYLES, DomainStyle, generate, swapped

TARGET_SUBJECTS, SCORED_SUBJECTS = ("S11", "S12", "S13"), ("S14", "S15")
_SOURCE_BODIES = swapped("synthetic-real", "synthetic-source", LOOKS["bodies"])
TARGETS: dict[str, DomainStyle] = {
    "as-rendered": STYLES["synthetic-real"],
    "facing-cues": dataclasses.replace(STYLES["synthetic-real"], facing_cues=True),
    "source-bodies": _SOURCE_BODIES,
    # Through a worse camera than the target's own: a gap of looks that draws every cue of the
    # people, blurred and noisier.
    "worse-camera": dataclasses.replace(
        _SOURCE_BODIES, blur_sigma=(0.8, 2.0), noise_std=(8.0, 20.0), colour_cast=0.4
    ),
    # In a flat, hazy exposure (a fifth to a third of the contrast), which the source model was never
    # trained through: a larger gap of looks, every cue still drawn.
    "low-contrast": dataclasses.replace(_SOURCE_BODIES, contrast=(0.2, 0.35)),
    # The benchmark's target with torsos broader than their joints, as a source with fuller torsos
    # (``flesh_mm``) draws them: whether such a pair still poses the paper's problem.
    "fleshed": dataclasses.replace(STYLES["synthetic-real"], flesh_mm=(40.0, 110.0)),
}


def write_target(out: Path, style: DomainStyle, frames: int = 5000, scored: int = 1000) -> tuple[Path, Path]:
    """The target's first ``frames`` training frames in ``style``, split by subject into ``out/target``
    and the first ``scored`` of the others into ``out/scored``; the same people, poses and cameras
    whatever the style's looks."""
    rows = list(generate("synthetic-real", "train", frames, style=style, workers=2))
    paths = out / "target", out / "scored"
    write_records([r for r in rows if r["subject"] in TARGET_SUBJECTS], paths[0])
    write_records([r for r in rows if r["subject"] in SCORED_SUBJECTS][:scored], paths[1])
    return paths


def table1(
    storage: Path,
    name: str,
    target: Path,
    scored: Path,
    seed: int,
    init_checkpoint: str | None = None,
    source: str | None = None,
) -> dict:
    """Table 1 of one seed on ``target``, scored on ``scored``: ``jobs/experiments.py``'s rows by method,
    every method starting from ``init_checkpoint`` where given (else the bench's, the shipped model),
    adapting with ``source`` as the labeled source where given (else the bench's)."""
    command = [
        sys.executable, "jobs/experiments.py", "--config", "configs/experiments/bench.yaml",
        "--storage", str(storage), "--run-name", name, "--target", str(target), "--test", str(scored),
        "--set", f"experiments.seeds=[{seed}]", "--set", 'experiments.policies=["60%,5%,99%"]',
    ]  # fmt: skip
    if init_checkpoint:
        command += ["--init-checkpoint", init_checkpoint]
    if source:
        command += ["--source", source]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    results = json.loads((storage / name / "results.json").read_text())
    keep = ("mpjpe", "pa_mpjpe", "mpjpe_over_mean_pose", "gap_closed")
    return {row["method"]: {k: row[k]["mean"] for k in keep} for row in results["table1"]}


def main() -> None:
    """Write each target, run Table 1 on it, print and write the rows with Only source / Only target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets", nargs="+", choices=tuple(TARGETS), default=["as-rendered", "facing-cues"]
    )
    parser.add_argument("--storage", type=Path, default=Path("runs/target_variants"), help="a new directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init-checkpoint", help="the source model every method starts from (default: the shipped one)"
    )
    parser.add_argument(
        "--source", help="the labeled source the adapting methods train on (default: the bench's)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.storage.mkdir(parents=True)
    results = {}
    for name in args.targets:
        target, scored = write_target(args.storage / "data" / name, TARGETS[name])
        rows = table1(args.storage, name, target, scored, args.seed, args.init_checkpoint, args.source)
        ratio = rows["only-source"]["mpjpe"] / rows["only-target"]["mpjpe"]
        results[name] = {"rows": rows, "only_source_over_only_target": ratio}
    print_json({"seed": args.seed, "init_checkpoint": args.init_checkpoint, "source": args.source,
                "subjects": {"target": TARGET_SUBJECTS, "scored": SCORED_SUBJECTS},
                "targets": results}, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
