"""Driver-kill drill at random points: does ``--resume`` always finish a run with whole rounds?

Starts a private Ray head (``LocalRay``) and the embedded S3 (or uses ``--storage``), renders the
smoke config's data once, then repeats: start a fresh run; up to ``--max-kills-per-run`` times,
SIGKILL the driver at a random kill point (a random kind of ``dfa_ray.ops.drills.KILL_POINTS`` that lies
ahead of the run's last committed stage, plus a random delay up to ``--max-delay`` s) and audit the
run; then resume without a kill and audit the finished run. A kill point counts as **resumed
correctly** when the audit after it is clean and the run it belongs to finishes with every round
committed and whole. Stops after ``--kills`` kills and writes a JSON report.

    .venv/bin/python benchmarks/driver_kill.py --kills 12 --out runs/driver_kill.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

from dfa_ray.config import load_config
from dfa_ray.ops.drills import KILL_POINTS, KillPoint, audit, repo_root, run_driver, synthetic_target_ids
from dfa_ray.ops.localcluster import LocalRay
from dfa_ray.ops.objectstore import EmbeddedS3
from dfa_ray.ops.rundir import RunDir

CONFIG = "configs/smoke.yaml"


def kill_point(
    rng: random.Random, rounds: int, committed: list[int], max_delay: float
) -> tuple[str, KillPoint]:
    """A random kill point after the last committed stage."""
    start = (committed[-1] + 1) if committed else 0
    choices = [("pretraining", 0), ("pretrain checkpoint", 0)] if start == 0 else []
    choices += [(kind, k) for k in range(max(start, 1), rounds + 1) for kind in list(KILL_POINTS)[2:]]
    kind, k = rng.choice(choices)
    delay = 0.0 if "checkpoint" in kind or kind == "selection" else round(rng.uniform(0, max_delay), 2)
    name = kind if k == 0 else f"round {k} {kind}"
    return f"{name} +{delay:.2f} s", KillPoint.named(kind, max(k, 1), delay)


def main(argv: list[str] | None = None) -> int:
    """Run the drill; exit 1 unless every kill point resumed correctly."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kills", type=int, default=12, help="kill points in all (at least 10 for the issue)"
    )
    parser.add_argument("--max-kills-per-run", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-delay", type=float, default=8.0, help="seconds after a stage's first line")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/driver_kill.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    repo = repo_root()
    smoke = load_config(repo / CONFIG)
    with tempfile.TemporaryDirectory() as scratch, EmbeddedS3(Path(scratch) / "s3", bucket="drill") as s3:
        os.environ.update(s3.env())  # this process audits the runs in the store
        with LocalRay(num_cpus=2, env=s3.env()) as head:
            env = {**head.env, "RAY_ADDRESS": head.address}
            root = s3.uri(f"drill-{secrets.token_hex(4)}")
            base = ["--config", CONFIG, "--storage", root, "--rounds", str(args.rounds)]
            # Read once, after the first attempt has rendered the data.
            targets = functools.cache(lambda: synthetic_target_ids(root, smoke))
            records, kills, started = [], 0, time.perf_counter()
            while kills < args.kills:
                name = f"run{len(records)}"
                run, attempts = RunDir(root, name), []
                for _ in range(min(args.max_kills_per_run, args.kills - kills)):
                    label, point = kill_point(rng, args.rounds, run.committed_rounds(), args.max_delay)
                    resume = ["--resume"] if attempts else []
                    done = run_driver([*base, "--run-name", name, *resume], env, repo, point, timeout=900)
                    if not done.killed:
                        if done.returncode != 0:
                            print(done.output[-3000:], file=sys.stderr)
                        break  # the run ended first (or failed): no kill to count
                    kills += 1
                    problems = audit(run, targets())
                    attempts.append({"kill": label, "seconds": round(done.seconds, 1),
                                     "committed": run.committed_rounds(), "problems": problems})  # fmt: skip
                    print(f"{name}: killed at {label} after {done.seconds:.0f} s; committed "
                          f"{run.committed_rounds()}; audit {problems or 'clean'}", flush=True)  # fmt: skip
                final = run_driver([*base, "--run-name", name, "--resume"], env, repo, timeout=900)
                problems = audit(run, targets())
                finished = final.returncode == 0 and run.committed_rounds() == list(range(args.rounds + 1))
                print(
                    f"{name}: resumed to the end in {final.seconds:.0f} s: exit {final.returncode}, "
                    f"committed {run.committed_rounds()}, audit {problems or 'clean'}",
                    flush=True,
                )
                if final.returncode != 0:
                    print(final.output[-3000:], file=sys.stderr)
                for attempt in attempts:
                    attempt["resumed_correctly"] = not attempt["problems"] and finished and not problems
                records.append(
                    {"run": name, "attempts": attempts, "finished": finished, "final_problems": problems}
                )
    points = [a for r in records for a in r["attempts"]]
    good = sum(a["resumed_correctly"] for a in points)
    report = {
        "kill_points": len(points),
        "resumed_correctly": good,
        "runs": records,
        "config": CONFIG,
        "rounds": args.rounds,
        "seed": args.seed,
        "wall_clock_s": round(time.perf_counter() - started, 1),
        "machine": f"{os.cpu_count()} CPUs",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{good} of {len(points)} kill points resumed correctly; report {args.out}")
    return 0 if points and good == len(points) else 1


if __name__ == "__main__":
    sys.exit(main())
