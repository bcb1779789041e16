"""Where a PPO run's wall time went, from its metrics.jsonl (no extra instrumentation needed).

    python benchmarks/profile_run.py runs/ppo_flan_sentiments__cpu__seed1000__<hash> [more runs...]

Columns: rollout generation, judge scoring of rollouts, the rollout forward pass (logprobs, values,
reference), evaluations (generation + judge + external check on the held-out prompts), and the rest
(optimizer steps, logging, checkpoints) = total wall time - the others. Seconds, and shares of the total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: python benchmarks/profile_run.py

from zyn_ppo import runio  # noqa: E402

PARTS = {"generate": "time/rollout_generate", "judge": "time/rollout_score", "rollout forward": "time/rollout_forward",
         "evaluation": "time/eval"}


def profile(run_dir: Path, until_step: int | None = None) -> dict[str, float]:
    rows = runio.read_jsonl(run_dir / "metrics.jsonl")
    rows = [r for r in rows if until_step is None or r["step"] <= until_step]
    total = max(r.get("time/elapsed") or 0.0 for r in rows)
    out = {name: sum(r.get(key) or 0.0 for r in rows) for name, key in PARTS.items()}
    out["optimizer steps + rest"] = total - sum(out.values())
    out["total"] = total
    out["steps"] = max(r["step"] for r in rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--until-step", type=int, default=None,
                        help="only the lines up to this step (a run that was continued further)")
    args = parser.parse_args(argv)
    names = [*PARTS, "optimizer steps + rest", "total"]
    print("| run | steps | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for run in args.runs:
        path = Path(run)
        if not (path / "metrics.jsonl").exists():
            print(f"error: {path / 'metrics.jsonl'} does not exist", file=sys.stderr)
            return 2
        p = profile(path, args.until_step)
        cells = [f"{p[n]:.0f} s ({p[n] / p['total']:.0%})" if n != "total" else f"{p[n]:.0f} s" for n in names]
        print(f"| {path.name} | {p['steps']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
