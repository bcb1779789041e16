"""ppo_flan_opinion.py and ppo_prompt_generator.py: end-to-end runs on tiny random models, config, diversity."""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import bag_of_words, run_script

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "cpu", "--total-steps", "2", "--tracker", "none", "--overrides", "method.num_rollouts=32",
        "method.chunk_size=32", "train.batch_size=8", "method.gen_kwargs.max_new_tokens=8"]


def run(script: str, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    out = run_script(script, *argv, timeout=timeout)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def eval_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(set(steps)), steps
    evals = [line for line in lines if "reward/mean" in line]
    assert evals and evals[0]["step"] == 0 and evals[0]["eval/index"] == 0
    for line in evals:
        for key, value in line.items():
            if isinstance(value, (int, float)):
                assert math.isfinite(value), (key, value)
    return evals


def samples(run_dir: Path, step: int = 0) -> list[dict]:
    path = run_dir / "samples" / f"eval_{step}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_opinion_tiny_run(tmp_path, tiny_llama_dir, tiny_gpt2_dir):
    run_dir = tmp_path / "run"
    run("ppo_flan_opinion.py", *TINY, "--judge", tiny_llama_dir, "--policy", tiny_gpt2_dir,
        "--logging-dir", str(run_dir), "--topic", "nuclear power", "--stance", "in favour of nuclear power")
    from zyn_reward import YesNoQuestion

    stance = "metrics/prob_" + YesNoQuestion("Is this text in favour of nuclear power?").name
    heldout = "metrics/prob_" + YesNoQuestion("Does the author of this text argue in favour of nuclear power?").name
    for line in eval_lines(run_dir):
        for key in ("metrics/prob_positive", stance, heldout, "metrics/external_vader", "metrics/external_stance",
                    "metrics/ontask_topic"):
            assert 0.0 <= line[key] <= 1.0, (key, sorted(line))
        assert line["metrics/prob_positive"] == line[stance]  # the rewarded question
        assert abs(line["reward/mean"] - (line[stance] - 0.5) * 10) < 1e-6
        assert "metrics/prob_ensemble" not in line  # the held-out question is logged, never rewarded
    rows = samples(run_dir)
    assert len(rows) == 40  # 10 held-out wordings x 4
    assert all("nuclear power" in r["prompt"] and "{topic}" not in r["prompt"] for r in rows)
    metrics = rows[0]["metrics"]
    assert metrics[stance.removeprefix("metrics/")] != metrics[heldout.removeprefix("metrics/")]  # two questions


@pytest.mark.slow
def test_opinion_oracle_trains_on_the_external_stance(tmp_path, tiny_llama_dir, tiny_gpt2_dir):
    run_dir = tmp_path / "oracle"  # another stance: asked the paper's way (the tiny judge lacks "for"/"against")
    run("ppo_flan_opinion.py", *TINY, "--judge", tiny_llama_dir, "--policy", tiny_gpt2_dir, "--logging-dir",
        str(run_dir), "--reward", "external", "--stance", "against stricter gun control")
    assert json.loads((run_dir / "run.json").read_text())["run"]["against"] == "in favour of stricter gun control"
    for row in samples(run_dir):  # the evaluation reward is the oracle's; the judge's P is still logged
        assert row["reward"] == pytest.approx((row["metrics"]["external_stance"] - 0.5) * 10)
        assert 0 <= row["metrics"]["prob_positive"] <= 1


@pytest.mark.slow
def test_prompt_generator_tiny_run(tmp_path, tiny_llama_dir, tiny_gpt2_dir):
    import ppo_prompt_generator as pg

    run_dir = tmp_path / "run"
    run("ppo_prompt_generator.py", *TINY, "--judge", tiny_llama_dir, "--policy", tiny_gpt2_dir,
        "--logging-dir", str(run_dir), "--question", "Is this prompt about space?", "Is this prompt too long?",
        "--target", "yes", "no", "--name", "space", "long")
    evals = eval_lines(run_dir)
    for line in evals:
        for key in ("metrics/prob_space", "metrics/prob_long", "metrics/prob_ensemble",
                    "metrics/distinct_1", "metrics/distinct_2", "metrics/ontask_prompt"):
            assert 0.0 <= line[key] <= 1.0, (key, line)
        ensemble = (line["metrics/prob_space"] + line["metrics/prob_long"]) / 2
        assert abs(line["metrics/prob_ensemble"] - ensemble) < 1e-6
    # distinct-n is computed per scoring batch (method.chunk_size eval samples) and averaged over samples
    rows = samples(run_dir)
    assert len(rows) == pg.NUM_EVAL
    size = yaml.safe_load((run_dir / "config.yaml").read_text())["method"]["chunk_size"]
    chunks = [[r["output"] for r in rows[i:i + size]] for i in range(0, len(rows), size)]
    for n in (1, 2):
        expected = sum(reference_distinct(c, n) * len(c) for c in chunks) / len(rows)
        assert abs(evals[0][f"metrics/distinct_{n}"] - expected) < 1e-6


def test_a_presets_measured_way_applies_only_to_the_question_it_stands_for(capsys):
    """script.asks_the_measured_way, the rule of both scripts: the measured way for its own question, else the
    paper's way with a note; no preset measurement, no note."""
    from zyn_ppo import script
    from zyn_reward import JudgeSpec

    measured = JudgeSpec("Stance:", template="Text: {text}\n{question}", answers=("for", "against"),
                         asks="Is this text in favour of X?")
    assert script.asks_the_measured_way("cpu", measured, "Is this text in favour of X?") is True
    assert capsys.readouterr().err == ""
    assert script.asks_the_measured_way("cpu", measured, "Is this text against X?", paper="Yes/No") is False
    err = capsys.readouterr().err
    assert err.startswith("note: the cpu preset's measured way of asking ('Stance:' in ") and err.count("\n") == 1
    assert ("stands for 'Is this text in favour of X?', not 'Is this text against X?', so it is asked the paper's "
            "way (Yes/No)") in err
    both = ("Is it A?", "Is it B?")
    assert script.asks_the_measured_way("cpu", measured, both, both) is True
    assert script.asks_the_measured_way("cpu", measured, (*both, "--target no yes"), both, paper="Yes/No") is False
    assert "ways of asking stand for 'Is it A?', 'Is it B?', not 'Is it A?', 'Is it B?', '--target no yes'" in (
        capsys.readouterr().err)
    assert script.asks_the_measured_way("paper", None, "Is this text against X?") is False
    assert capsys.readouterr().err == ""


def test_cpu_preset_asks_the_measured_way_only_for_the_measured_question(capsys):
    import ppo_flan_opinion as opinion

    judge = opinion.make_reward(opinion.Args(preset="cpu", judge="gemma-3-270m"))
    assert [(q.question, q.name) for q in judge.questions] == [
        ("Stance:", "is_this_text_in_favour_of_stricter_gun_control")]
    assert judge.options["yes_words"] == ("for",) and judge.options["calibrate"] is True
    assert judge.logged_specs[0].answers == ("Yes", "No")  # the held-out question: the paper's way
    assert capsys.readouterr().err == ""
    other = opinion.make_reward(opinion.Args(preset="cpu", judge="gemma-3-270m",
                                             stance="against stricter gun control"))
    assert [q.question for q in other.questions] == ["Is this text against stricter gun control?"]
    assert other.options["yes_words"] == ("Yes",)
    assert "stands for 'Is this text in favour of stricter gun control?'" in capsys.readouterr().err


def test_opinion_judge_spec_asks_the_default_question_its_way(tmp_path, capsys):
    import ppo_flan_opinion as opinion
    from zyn_reward import JudgeSpec, UserError

    spec = JudgeSpec.from_file(str(ROOT / "configs" / "opinion_gemma_stance.json"))
    assert (spec.question, spec.answers, spec.calibrate, spec.model) == ("Stance:", ("for", "against"), True,
                                                                        "gemma-3-270m")
    assert spec.stands_for == opinion.QUESTION
    assert spec == opinion.PRESETS["cpu"].asking  # the file its runs were made with is the preset's way
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"spec": spec.to_dict()}))
    judge = opinion.make_reward(opinion.Args(preset="cpu", judge="gemma-3-270m", judge_spec=str(path)))
    assert [(q.question, q.name) for q in judge.questions] == [
        ("Stance:", "is_this_text_in_favour_of_stricter_gun_control")]
    assert judge.options["calibrate"] is True and judge.options["chat_template"] is False
    assert capsys.readouterr().err == ""
    with pytest.raises(UserError, match=r"^--judge-spec \S+ was measured on gemma-3-270m, the judge is "
                                        r"smollm2-135m-instruct: add --judge gemma-3-270m$"):
        opinion.make_reward(opinion.Args(preset="cpu", judge="smollm2-135m-instruct", judge_spec=str(path)))
    other = opinion.make_reward(opinion.Args(preset="cpu", judge="gemma-3-270m", judge_spec=str(path),
                                             stance="against stricter gun control"))
    assert other.options["yes_words"] == ("Yes",)  # another stance: the paper's way, as without the spec


# ------------------------------------------------------------------------------- external stance
STANCE_VOCAB = ("support", "oppose", "need", "not", "guns", "ban", "free")


def stance_words(texts):
    return bag_of_words(texts, STANCE_VOCAB)


def test_stance_check_matches_a_plain_reference():
    from zyn_ppo import script

    pro, con = ["I support a ban", "we need it"], ["I oppose a ban", "we do not need it"]
    samples = ["support support ban", "oppose guns", "free free guns", "we need not ban guns"]
    got = script.stance_check(pro, con, "external_x", embed=stance_words, temperature=0.1)(samples)["external_x"]
    expected = []
    for sample in samples:  # sigmoid of (mean cosine to pro - mean cosine to con) / temperature
        v = stance_words([sample])[0]
        margin = (np.mean([v @ stance_words([t])[0] for t in pro]) - np.mean([v @ stance_words([t])[0] for t in con]))
        expected.append(1 / (1 + math.exp(-margin / 0.1)))
    assert got == pytest.approx(expected)
    assert got[0] > 0.5 > got[1]  # nearer the stance, nearer its opposite
    assert script.stance_check(pro, con, embed=stance_words)([]) == {"external_stance": []}
    with pytest.raises(script.UserError, match="external_x needs statements of both opinions"):
        script.stance_check(pro, [], "external_x")
    with pytest.raises(script.UserError, match="temperature must be positive"):
        script.stance_check(pro, con, temperature=0)


def test_counter_stance_and_statements():
    import ppo_flan_opinion as opinion

    assert opinion.counter_stance(opinion.Args()) == "against stricter gun control"
    assert opinion.counter_stance(opinion.Args(stance="Against nuclear power")) == "in favour of nuclear power"
    assert opinion.counter_stance(opinion.Args(stance="pro-choice", against="pro-life")) == "pro-life"
    with pytest.raises(opinion.script.UserError, match="--against: give the opposite of --stance 'pro-choice'"):
        opinion.counter_stance(opinion.Args(stance="pro-choice"))
    with pytest.raises(opinion.script.UserError, match="--against must name the opposite"):
        opinion.counter_stance(opinion.Args(against="in favour of stricter gun control"))
    pro, con = opinion.stance_statements("against nuclear power", "in favour of nuclear power")
    assert pro == ["I am against nuclear power.", "against nuclear power", "I oppose nuclear power.",
                   "We do not need nuclear power."]
    assert con == ["I am in favour of nuclear power.", "in favour of nuclear power", "I support nuclear power.",
                   "We need nuclear power."]
    assert opinion.stance_statements("pro-choice", "pro-life") == (["I am pro-choice.", "pro-choice"],
                                                                   ["I am pro-life.", "pro-life"])


# ------------------------------------------------------------------------------------ distinct-n
def reference_distinct(texts: list[str], n: int) -> float:
    counts = Counter()
    for text in texts:
        words = text.lower().split()
        for i in range(len(words) - n + 1):
            counts[" ".join(words[i:i + n])] += 1
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def test_distinct_n():
    from ppo_prompt_generator import Args, external_check
    from zyn_ppo.script import distinct_n

    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n([], 1) == 0.0 and distinct_n(["", "one"], 2) == 0.0
    assert distinct_n(["same prompt"] * 8, 1) == pytest.approx(2 / 16)
    texts = ["a watercolor painting of a cat, soft light", "A Cat in watercolor", "oil painting of a city",
             "a city at night, neon, 8k", "", "trending on artstation, trending on artstation"]
    for n in (1, 2, 3):
        assert distinct_n(texts, n) == pytest.approx(reference_distinct(texts, n))
    out = external_check(Args(preset="cpu"), eval_prompts=["x", "y", "z"])(["x a b", "y a b"], prompts=["x", "y"],
                                                                           outputs=[" a b", " a b"])
    assert {k: out[k] for k in ("distinct_1", "distinct_2")} == {"distinct_1": [0.5, 0.5], "distinct_2": [0.5, 0.5]}
    assert len(out["ontask_prompt"]) == 2  # outputs only, one value per sample


# ------------------------------------------------------------------------------ keyword rates
def reference_has_word(text: str, words: set[str]) -> float:
    """Plain reference: lower-case, cut into words at anything but letters, then look up single words and
    two-word phrases."""
    tokens = "".join(c if c.isalpha() else " " for c in text.lower()).split()
    grams = set(tokens) | {" ".join(tokens[i:i + 2]) for i in range(len(tokens) - 1)}
    return float(bool(grams & words))


def test_prompt_words_check():
    from ppo_prompt_generator import Args, external_check, words_check

    watercolor = {"watercolor", "watercolour", "watercolors", "aquarelle", "painting", "paintings", "painted",
                  "paint", "paints", "brush strokes", "brushstrokes", "brushwork", "gouache", "pastel", "pigment"}
    nature = {"forest", "forests", "mountain", "mountains", "river", "ocean", "flower", "flowers", "tree", "trees",
              "meadow", "meadows", "lake", "sea", "waves", "beach", "beaches", "sky", "sunset", "landscape"}
    subjects = ["a forest", "a cat", "a city at night", "a lake", "a robot", "a mountain lake", "a dog", "a rose"]
    outputs = [" in the morning, 8k",                                # the subject alone never scores
               ", Watercolour painting of a cat in a MEADOW",        # both, any case
               ", neon lights, photo",                               # neither
               " at sunset, soft brush strokes",                     # both (a two-word phrase)
               ", repainting the forestry department",               # neither: parts of words do not count
               " with pine trees, oil painting",                     # both
               " by the sea-side, aquarelle",                        # both: hyphens end a word
               ", flowerbed, paintbrush"]                            # neither
    samples = [s + o for s, o in zip(subjects, outputs)]
    out = words_check()(samples, outputs=outputs)
    expected_w = [reference_has_word(o, watercolor) for o in outputs]
    expected_n = [reference_has_word(o, nature) for o in outputs]
    assert expected_w == [0, 1, 0, 1, 0, 1, 1, 0] and expected_n == [0, 1, 0, 1, 0, 1, 1, 0]
    assert out["external_watercolor_words"] == expected_w
    assert out["external_nature_words"] == expected_n
    assert out["external_prompt_words"] == [(a + b) / 2 for a, b in zip(expected_w, expected_n)]
    one = words_check()(["a cat, a river"], outputs=[", a river"])  # one of two: the mean is 0.5
    assert one["external_prompt_words"] == [0.5]
    full = external_check(Args(preset="cpu"), eval_prompts=subjects)(samples[:2], prompts=subjects[:2],
                                                                     outputs=outputs[:2])
    assert full["external_prompt_words"] == [0.0, 1.0] and len(full["ontask_prompt"]) == 2


def test_prompt_cpu_preset_asks_the_measured_way(capsys):
    import ppo_prompt_generator as pg

    judge = pg.make_reward(pg.Args(preset="cpu", judge="gemma-3-270m"))
    described = judge.describe()
    assert [(q["question"], q["template"], q["name"]) for q in described["questions"]] == [
        ("Style:", "Prompt: {text}\n{question}", "does_this_prompt_describe_a_watercolor_painting")]
    assert described["options"]["yes_words"] == ("watercolor",) and described["options"]["calibrate"] is True
    assert [(g["question"], g["answers"], g["asks"]) for g in described["guards"]] == [
        ("Subject:", ("nature", "city"), "Is this prompt about nature?")]
    assert capsys.readouterr().err == ""
    other = pg.make_reward(pg.Args(preset="cpu", judge="gemma-3-270m", question=("Is this prompt about space?",)))
    assert [(q.question, q.template) for q in other.questions] == [("Is this prompt about space?", pg.TEMPLATE)]
    assert other.guards == [] and "calibrate" not in other.options
    assert "not 'Is this prompt about space?', so they are asked the paper's way" in capsys.readouterr().err
    targets = pg.make_reward(pg.Args(preset="cpu", judge="gemma-3-270m", target=("yes", "yes")))  # not the default
    assert [q.template for q in targets.questions] == [pg.TEMPLATE] * 2 and targets.guards == []
    assert "'--target yes yes', so they are asked the paper's way" in capsys.readouterr().err


def test_keyword_check_bad_input():
    from zyn_ppo import script

    with pytest.raises(ValueError, match="text must be"):
        script.keyword_check({"x": script.word_pattern(["a"])}, text="prompts")
    with pytest.raises(ValueError, match="non-empty words"):
        script.word_pattern([])


# -------------------------------------------------------------------------------- config and flags
PAPER_VALUES = {("train", "seq_length"): 256, ("train", "batch_size"): 64, ("train", "total_steps"): 10000,
                ("train", "eval_interval"): 50, ("method", "num_rollouts"): 128, ("method", "chunk_size"): 128,
                ("method", "init_kl_coef"): 0.05, ("model", "num_layers_unfrozen"): 2}


@pytest.mark.parametrize("script, policy", [("ppo_flan_opinion.py", "gpt2"),
                                            ("ppo_prompt_generator.py", "Gustavosta/MagicPrompt-Stable-Diffusion")])
def test_paper_preset_config(script, policy):
    printed = yaml.safe_load(run(script, "--print-config", timeout=120).stdout)
    config, loads = printed["config"], printed["run"]
    for (section, key), value in PAPER_VALUES.items():
        assert config[section][key] == value, (section, key)
    assert config["optimizer"]["kwargs"]["lr"] == pytest.approx(1e-4)
    assert config["method"]["gen_kwargs"]["max_new_tokens"] == 40
    assert config["model"]["model_path"] == config["tokenizer"]["tokenizer_path"] == policy
    assert config["train"]["tracker"] == "wandb"
    judge = loads["judge"]
    assert judge["model"] == "google/flan-t5-large"
    asked = [(q["question"], q["target"]) for q in judge["questions"]]
    if script == "ppo_flan_opinion.py":
        assert asked == [("Is this text in favour of stricter gun control?", "yes")]
        assert [(q["question"], q["answers"]) for q in judge["logged_specs"]] == [
            ("Does the author of this text argue in favour of stricter gun control?", ["Yes", "No"])]
    else:
        assert asked == [("Does this prompt describe a watercolor painting?", "yes"),
                         ("Is this prompt about nature?", "yes")]


def test_help():
    opinion = run("ppo_flan_opinion.py", "--help", timeout=120).stdout
    for flag in ("--preset", "--total-steps", "--seed", "--logging-dir", "--tracker", "--judge", "--policy",
                 "--topic", "--stance", "--question", "--heldout-question", "--judge-spec", "--print-config"):
        assert flag in opinion, flag
    generator = run("ppo_prompt_generator.py", "--help", timeout=120).stdout
    for flag in ("--preset", "--total-steps", "--seed", "--logging-dir", "--tracker", "--judge", "--policy",
                 "--question", "--target", "--name", "--render", "--render-model", "--print-config"):
        assert flag in generator, flag


def test_mismatched_targets_and_render_never_required(tmp_path, capsys):
    import ppo_prompt_generator as pg

    with pytest.raises(pg.script.UserError, match="one value per question"):
        pg.make_reward(pg.Args(target=("yes",)))
    assert pg.render(pg.Args(), tmp_path) is None  # no diffusers, no GPU or no samples
    assert "rendering skipped" in capsys.readouterr().out


def test_data_files():
    opinion = [l for l in (ROOT / "data/opinion_prompts.txt").read_text().splitlines() if l.strip()]
    assert len(opinion) >= 30 and len(set(opinion)) == len(opinion)
    assert all(line.count("{topic}") == 1 for line in opinion)
    subjects = [l for l in (ROOT / "data/image_subjects.txt").read_text().splitlines() if l.strip()]
    assert len(subjects) >= 200 and len(set(subjects)) == len(subjects)
    assert all(len(s.split()) <= 6 for s in subjects)
