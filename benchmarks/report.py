"""How the benchmarks publish a markdown report: printed, and appended to a results file unless it is "-"."""

from __future__ import annotations


def publish(report: str, output: str) -> None:
    print(report)
    if output != "-":
        with open(output, "a") as f:
            f.write("\n" + report.rstrip("\n") + "\n")
