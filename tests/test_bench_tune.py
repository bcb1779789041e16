"""benchmarks/bench_tune.py: the report names the number of texts `tune` measured, not --limit."""

from __future__ import annotations

import json
import subprocess

from benchmarks import bench_tune
from zyn_reward import read_labeled
from zyn_reward.tune import sample


def fake_tune(command, **kwargs):
    """`python -m zyn_reward tune` without judges: samples the texts as tune does and writes its count."""
    value = lambda flag: command[command.index(flag) + 1]  # noqa: E731
    texts, labels = read_labeled(value("--labeled"))
    keep = [i for i, t in enumerate(texts) if t.strip() and len(t) <= int(value("--max-chars"))]
    texts, _ = sample([texts[i] for i in keep], [labels[i] for i in keep], int(value("--limit")), 0, True)
    with open(value("--out"), "w") as f:
        json.dump({"texts": len(texts)}, f)
    return subprocess.CompletedProcess(command, 0, stdout=f"tune: on {len(texts)} texts\nwritten: x\n", stderr="")


def test_the_stance_report_shows_the_40_texts_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_tune.subprocess, "run", fake_tune)
    out = tmp_path / "results.md"
    bench_tune.main(["--task", "stance", "--output", str(out)])
    report = out.read_text()
    assert "(40 labelled texts;" in report and "samples at most 200, balanced, seed 0: 40 texts measured)" in report
    assert " min) for 40 texts." in report
    assert "for 200 texts" not in report and "samples 200," not in report
    assert "--limit 200" in report  # the command that ran, as it ran
    # a --limit below the rows: that many are measured
    bench_tune.main(["--task", "stance", "--limit", "10", "--output", str(out)])
    assert "samples at most 10, balanced, seed 0: 10 texts measured)" in out.read_text().split("## stance")[-1]
