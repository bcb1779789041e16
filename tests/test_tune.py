"""Asking your own question: JudgeSpec, a copied script as a template, and `python -m zyn_reward tune`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import ROOT, SCRIPT_ENV
from helpers import run_script as run

from zyn_reward import JudgeSpec, UserError, YesNoQuestion, ZeroShotRewardModel
from zyn_reward import tune as zyn_tune

TINY = ["--overrides", "method.num_rollouts=4", "method.chunk_size=4", "train.batch_size=2",
        "train.eval_interval=1", "method.gen_kwargs.max_new_tokens=8"]
TEXTS = ["I loved this film, wonderful acting.", "Dull, too long and badly written.", "A masterpiece.",
         "The worst movie I have seen.", "Great fun for the whole family!", "Boring plot, wooden actors."]


# ------------------------------------------------------------------------------------------- JudgeSpec
def test_judge_spec_keeps_a_question_with_its_way_of_asking():
    paper = JudgeSpec("Is this movie review positive?")
    assert paper.answers == ("Yes", "No") and paper.transform == "centered" and "Response:" in paper.template
    assert [q.name for q in paper.questions()] == ["is_this_movie_review_positive"]
    label = JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                      transform="logodds", asks="Is this movie review positive?")
    assert label.questions()[0].name == "is_this_movie_review_positive"  # metrics named after the question
    assert label.reward_options()["yes_words"] == ("positive",)
    pair = JudgeSpec("Is this review positive?", negation="Is this review negative?")
    assert [q.target for q in pair.questions()] == ["yes", "no"]
    with pytest.raises(UserError, match="asks yes or no, but the answer words are 'positive'/'negative'"):
        JudgeSpec("Is this review scary?", answers=("positive", "negative")).check()


def test_judge_spec_file_round_trip_and_errors(tmp_path):
    spec = JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                     asks="Is this movie review positive?", model="gemma-3-270m")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"spec": spec.to_dict(), "held_out": {"score": 0.9}}))
    assert JudgeSpec.from_file(str(path)) == spec
    path.write_text(json.dumps({"question": "x", "colour": "red"}))
    with pytest.raises(UserError, match=r"unknown field\(s\) \['colour'\]"):
        JudgeSpec.from_file(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        JudgeSpec.from_file(str(path))


def test_the_committed_guard_specs_of_d5_ask_what_the_presets_ask():
    """configs/d5_comedy_genre*.json (the --guard-spec of committed runs) are presets.comedy_genre: the runs with
    the weight-2 file are the cpu preset's runs, the same run directory, as long as both agree."""
    import ppo_d5_movies as d5
    from zyn_ppo import presets
    assert JudgeSpec.from_file(str(ROOT / "configs" / "d5_comedy_genre.json")) == presets.comedy_genre()
    weight_2 = JudgeSpec.from_file(str(ROOT / "configs" / "d5_comedy_genre_x2.json"))
    assert weight_2 == presets.comedy_genre(weight=2.0)
    assert d5.PRESETS["cpu"].guards == [weight_2]


# ------------------------------------------------------------------------------------------- templates
def copy_sentiment_script(tmp_path, old: str, new: str):
    text = (ROOT / "ppo_flan_sentiments.py").read_text()
    assert text.count(old) == 1
    path = tmp_path / "my_question.py"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.slow
def test_a_copied_script_with_only_the_question_changed_asks_it_the_papers_way(tmp_path, tiny_llama_dir,
                                                                                tiny_gpt2_dir):
    script = copy_sentiment_script(tmp_path, 'QUESTION = "Is this movie review positive?"',
                                   'QUESTION = "Is this movie review about a horror film?"')
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), "--preset", "cpu", "--judge", tiny_llama_dir, "--policy",
                           tiny_gpt2_dir, "--total-steps", "1", "--logging-dir", str(out), *TINY], cwd=ROOT,
                          env=SCRIPT_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "stands for 'Is this movie review positive?'" in notes[0], proc.stderr[-2000:]
    judge = json.loads((out / "run.json").read_text())["run"]["judge"]
    assert judge["questions"][0]["question"] == "Is this movie review about a horror film?"
    assert judge["options"]["yes_words"] == ["Yes"] and judge["options"]["transform"] == "centered"
    assert "Response:" in judge["questions"][0]["template"]
    evaluation = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "metrics/prob_is_this_movie_review_about_a_horror_film" in evaluation
    assert evaluation["metrics/prob_positive"] == evaluation["metrics/prob_is_this_movie_review_about_a_horror_film"]


def test_a_copied_script_that_asks_a_question_with_label_words_stops_with_one_line(tmp_path):
    # the cpu preset's measured phrasing (zyn_ppo/presets.py) edited in the copy: a question with label words
    script = copy_sentiment_script(tmp_path, "PRESETS = presets.sentiment(QUESTION)",
                                   "PRESETS = presets.sentiment(QUESTION)\nimport dataclasses\nPRESETS['cpu'].asking = "
                                   "dataclasses.replace(PRESETS['cpu'].asking, question='Is this movie review scary?')")
    proc = subprocess.run([sys.executable, str(script), "--preset", "cpu", "--print-config"], cwd=ROOT,
                          env=SCRIPT_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "answer words are 'positive'/'negative'" in proc.stderr and "Yes" in proc.stderr


def print_config(*args: str) -> tuple[dict, str]:
    proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--print-config", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return yaml.safe_load(proc.stdout)["run"]["judge"], proc.stderr


def test_question_flag_alone_gets_the_papers_recipe_and_says_so():
    judge, stderr = print_config("--question", "Is this movie review funny?")
    assert judge["questions"][0]["question"] == "Is this movie review funny?"
    assert judge["options"]["yes_words"] == ["Yes"] and judge["options"]["transform"] == "centered"
    assert "asked the paper's way" in stderr
    judge, stderr = print_config()  # the preset's measured phrasing, no note
    assert judge["questions"][0]["question"] == "Sentiment:" and "note:" not in stderr
    judge, _ = print_config("--transform", "centered")  # one part of the preset's phrasing changed
    assert judge["questions"][0]["question"] == "Sentiment:" and judge["options"]["transform"] == "centered"


def test_judge_spec_flag_sets_the_way_of_asking_and_the_judge(tmp_path, tiny_llama_dir):
    spec = JudgeSpec("Tone:", template="Text: {text}\n{question}", answers=("happy", "sad"), calibrate=True,
                     asks="Is this movie review positive?", model=tiny_llama_dir)
    (tmp_path / "spec.json").write_text(json.dumps({"spec": spec.to_dict()}))
    judge, _ = print_config("--judge-spec", str(tmp_path / "spec.json"))
    assert judge["model"] == tiny_llama_dir and judge["questions"][0]["question"] == "Tone:"
    assert judge["options"]["calibrate"] is True and judge["options"]["no_words"] == ["sad"]


# ------------------------------------------------------------------------------------------- the tuner
def test_proposals_from_the_question():
    assert zyn_tune.noun_of("Is this movie review positive?") == "Review"
    assert zyn_tune.noun_of("Is this text rude?") == "Text"
    assert zyn_tune.propose_words("Is this movie review positive?") == ("positive", "negative", "Sentiment")
    assert zyn_tune.propose_negation("Is this movie review positive?") == "Is this movie review negative?"
    assert zyn_tune.propose_words("Is this a haiku?") is None and zyn_tune.propose_negation("Is it?") == ""


def test_every_label_is_tried_with_every_pair_of_answer_words():
    ways = zyn_tune.ways_of_asking("Is this text in favour of X?", ["a", "b"], {"b"}, [("for", "against"),
                                   ("favour", "oppose")], ["Stance", "Opinion"], "Is this text against X?", "Text")
    tried = [(w.model, w.chat, w.answers, w.template_name, w.question) for w in ways]
    for model, chats in (("a", [False]), ("b", [False, True])):
        for chat in chats:
            assert (model, chat, ("Yes", "No"), "flan", "Is this text in favour of X?") in tried
            for words in (("for", "against"), ("favour", "oppose")):
                for label in ("Stance", "Opinion"):
                    assert (model, chat, words, "label", f"{label}:") in tried
    assert len(ways) == 3 * (2 + 4)  # three (judge, chat) settings: flan and qa, and 2 labels x 2 word pairs
    assert all(w.negation == "Is this text against X?" for w in ways if w.answers == ("Yes", "No"))
    proposed = zyn_tune.ways_of_asking("Is this review positive?", ["a"], set(), None, None, "", "Review")
    assert [(w.answers, w.question) for w in proposed if w.template_name == "label"] == [
        (("positive", "negative"), "Sentiment:")]


def test_answer_words_without_a_label_stop_with_one_line(tmp_path):
    write_csv(tmp_path / "data.csv", [(f"text {i}", i % 2) for i in range(16)])
    proc = subprocess.run([sys.executable, "-m", "zyn_reward", "tune", "--question", "Is this text in favour of X?",
                           "--labeled", str(tmp_path / "data.csv"), "--answers", "for", "against"], cwd=ROOT,
                          env=SCRIPT_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == ("error: --answers needs --label: the label prompt the "
                                                            "answer words complete, e.g. --label Stance"), proc.stderr


def test_split_is_stratified_disjoint_and_complete():
    labels = [1] * 30 + [0] * 10
    choose, hold = zyn_tune.split(labels, 0.5, seed=3, binary=True)
    assert not set(choose) & set(hold) and sorted(choose + hold) == list(range(40))
    assert sum(labels[i] for i in hold) == 15 and len(hold) == 20
    assert zyn_tune.split(labels, 0.5, seed=3, binary=True) == (choose, hold)


def test_techniques_equal_the_reward_models_own_numbers(tiny_llama_dir):
    """The tuner scores every technique from one pass; each must be what a ZeroShotRewardModel with that
    configuration computes (the pair is Eq. 4 with the negation targeting no)."""
    way = zyn_tune.Way(tiny_llama_dir, False, ("Yes", "No"), "flan", "Review: {text}\n\n {question} Response:",
                       "Is this review positive?", "Is this review negative?")
    zyn_tune.score_ways([way], TEXTS)
    q = YesNoQuestion(way.question, template=way.template)
    pair = YesNoQuestion.pair(way.question, way.negation, template=way.template)
    plain = ZeroShotRewardModel(tiny_llama_dir, q, chat_template=False).probabilities(TEXTS)
    calibrated = ZeroShotRewardModel(tiny_llama_dir, q, chat_template=False, calibrate=True).probabilities(TEXTS)
    cal_pair = ZeroShotRewardModel(tiny_llama_dir, pair, chat_template=False, calibrate=True).probabilities(TEXTS)
    np.testing.assert_allclose(way.scores["plain"], plain, atol=1e-6)
    np.testing.assert_allclose(way.scores["calibrated"], calibrated, atol=1e-6)
    np.testing.assert_allclose(way.scores["calibrated pair"], cal_pair, atol=1e-6)


def test_binary_metrics_against_a_plain_reference():
    rng = np.random.default_rng(0)
    probs, labels = rng.random(40), np.array([1, 0] * 20)
    m = zyn_tune.binary_metrics(probs, labels, rng, resamples=200)
    pairs = [(p, n) for p in probs[labels == 1] for n in probs[labels == 0]]
    assert m["score"] == pytest.approx(sum(p > n for p, n in pairs) / len(pairs))
    assert m["lo"] <= m["score"] <= m["hi"]
    assert m["accuracy"] == pytest.approx(np.mean((probs >= 0.5) == (labels == 1)))


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def test_tune_chooses_on_one_part_and_estimates_on_the_other(tmp_path, tiny_llama_dir, monkeypatch):
    """A configuration that is perfect on the choosing part but wrong on the held-out part is chosen, and
    its held-out number is what is reported: the held-out texts play no part in the choice."""
    rows = [(f"text number {i}", i % 2) for i in range(40)]
    write_csv(tmp_path / "data.csv", rows)
    labels = np.array([y for _, y in rows])
    choose, hold = zyn_tune.split(list(labels), 0.5, seed=0, binary=True)

    def fake_scores(ways, texts, progress=None):
        lucky = labels.astype(float) * 0.8 + 0.1  # perfect everywhere...
        lucky[hold] = 1 - lucky[hold]  # ...but backwards on the held-out part
        for way in ways:
            way.scores = {t: np.full(len(texts), 0.5) + 0.01 * np.sin(np.arange(len(texts)))
                          for t in ("plain", "calibrated")}
        ways[0].scores["plain"] = lucky

    monkeypatch.setattr(zyn_tune, "score_ways", fake_scores)
    args = SimpleNamespace(labeled=str(tmp_path / "data.csv"), dataset=None, texts=None, text_column="text",
                           label_column="label", question="Is this text positive?", negation=None, answers=None,
                           label=None, noun=None, model=[tiny_llama_dir], limit=40, max_chars=1000, held_out=0.5,
                           bootstrap=100, seed=0, out=str(tmp_path / "spec.json"), scorer="vader")
    result = zyn_tune.run(args)
    assert result["choosing"]["score"] == 1.0 and result["held_out"]["score"] == 0.0
    assert result["technique"] == "plain" and result["texts"] == 40
    spec = JudgeSpec.from_file(str(tmp_path / "spec.json"))
    assert spec.model == tiny_llama_dir and spec.question == "Is this text positive?"


@pytest.mark.slow
def test_tune_command_end_to_end_on_a_tiny_judge(tmp_path, tiny_llama_dir):
    write_csv(tmp_path / "data.csv", [(t, i % 2 == 0) for i, t in enumerate(TEXTS * 4)])
    proc = subprocess.run([sys.executable, "-m", "zyn_reward", "tune", "--question",
                           "Is this movie review positive?", "--labeled", str(tmp_path / "data.csv"), "--model",
                           tiny_llama_dir, "--bootstrap", "50", "--out", str(tmp_path / "spec.json")], cwd=ROOT,
                          env=SCRIPT_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flags for the experiment scripts:" in proc.stdout and f"--judge {tiny_llama_dir}" in proc.stdout
    assert "positive/negative | label" in proc.stdout  # the answer words proposed from the question were tried
    result = json.loads((tmp_path / "spec.json").read_text())
    assert result["texts"] == 24 and result["measure"] == "auroc"
    JudgeSpec.from_file(str(tmp_path / "spec.json"))


def test_a_guard_question_asked_its_own_way_joins_the_eq4_mean(tiny_llama_dir):
    """Judge(guards=[JudgeSpec]): the reward is the transform of the weighted mean of the rewarded questions'
    and the guards' P(target), each asked with its own answer words."""
    from zyn_ppo import script
    from zyn_reward import transform_reward

    main = JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                     transform="logodds", asks="Is this movie review positive?")
    guard = JudgeSpec("Is this text about a film?", template="flan_toxicity")
    judge = script.Judge(tiny_llama_dir, main.questions(), guards=[guard], **main.reward_options())
    p_main = ZeroShotRewardModel(tiny_llama_dir, main.questions(), **main.reward_options()).probabilities(TEXTS)
    p_guard = ZeroShotRewardModel(tiny_llama_dir, guard.questions(), **guard.reward_options()).probabilities(TEXTS)
    expected = [transform_reward((a + b) / 2, "logodds") for a, b in zip(p_main, p_guard)]
    np.testing.assert_allclose(judge.reward_fn(TEXTS), expected, atol=1e-6)
    metrics = judge.metric_fn(TEXTS)
    np.testing.assert_allclose(metrics["prob_is_this_text_about_a_film"], p_guard, atol=1e-6)
    np.testing.assert_allclose(metrics["prob_ensemble"], (np.array(p_main) + p_guard) / 2, atol=1e-6)
    assert judge.describe()["guards"][0]["question"] == "Is this text about a film?"
    assert "guards" not in script.Judge(tiny_llama_dir, main.questions(), **main.reward_options()).describe()


def test_a_logged_spec_is_asked_its_own_way_and_never_rewarded(tiny_llama_dir):
    from zyn_ppo import script

    main = JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                     asks="Is this movie review positive?")
    logged = JudgeSpec("Is this text about a film?", template="flan_toxicity")
    judge = script.Judge(tiny_llama_dir, main.questions(), logged_specs=[logged], **main.reward_options())
    alone = ZeroShotRewardModel(tiny_llama_dir, main.questions(), **main.reward_options())
    p_logged = ZeroShotRewardModel(tiny_llama_dir, logged.questions(), **logged.reward_options()).probabilities(TEXTS)
    np.testing.assert_allclose(judge.reward_fn(TEXTS), alone.reward_fn(TEXTS), atol=1e-6)
    metrics = judge.metric_fn(TEXTS)
    np.testing.assert_allclose(metrics["prob_is_this_text_about_a_film"], p_logged, atol=1e-6)
    np.testing.assert_allclose(metrics["prob_positive"], alone.probabilities(TEXTS), atol=1e-6)
    assert "prob_ensemble" not in metrics and judge.describe()["logged_specs"][0]["answers"] == ("Yes", "No")
    from zyn_ppo.card import model_card

    card = model_card({"run": {"judge": judge.describe(), "policy": "p"}, "config": {}}, [], 0, "c")
    assert "- Logged question (not rewarded), asked its own way: 'Is this text about a film?' answered" in card


def test_logged_questions_and_specs_are_one_mechanism_on_the_loaded_judge(tiny_llama_dir):
    """Judge(logged=[...]): a plain question is asked with the rewarded question's options, a JudgeSpec its own
    way; each is logged (never rewarded) from the judge's one loaded model, and described as before."""
    import dataclasses

    from zyn_ppo import script

    main = JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                     asks="Is this movie review positive?")
    plain = YesNoQuestion("Is this text long?", template="Review: {text}\n{question}")
    spec = JudgeSpec("Is this text about a film?", template="flan_toxicity")
    judge = script.Judge(tiny_llama_dir, main.questions(), logged=[plain, spec], **main.reward_options())
    alone = ZeroShotRewardModel(tiny_llama_dir, main.questions(), **main.reward_options())
    p_plain = ZeroShotRewardModel(tiny_llama_dir, [plain], **main.reward_options()).probabilities(TEXTS)
    p_plain_yes_no = ZeroShotRewardModel(tiny_llama_dir, [plain]).probabilities(TEXTS)
    p_spec = ZeroShotRewardModel(tiny_llama_dir, spec.questions(), **spec.reward_options()).probabilities(TEXTS)
    np.testing.assert_allclose(judge.reward_fn(TEXTS), alone.reward_fn(TEXTS), atol=1e-6)  # never rewarded
    metrics = judge.metric_fn(TEXTS)
    np.testing.assert_allclose(metrics["prob_is_this_text_long"], p_plain, atol=1e-6)  # the rewarded answer words
    assert not np.allclose(p_plain, p_plain_yes_no, atol=1e-4)
    np.testing.assert_allclose(metrics["prob_is_this_text_about_a_film"], p_spec, atol=1e-6)  # its own way
    assert "prob_ensemble" not in metrics
    assert [a.questions for a in judge.logged_askings] == [[plain], spec.questions()]
    assert all(a.rm.model is judge.rm.model and a.rm.tokenizer is judge.rm.tokenizer for a in judge.logged_askings)
    described = judge.describe()
    assert described["logged_questions"] == [dataclasses.asdict(plain)]
    assert described["logged_specs"] == [spec.to_dict()]
    assert list(described) == ["model", "options", "questions", "logged_questions", "logged_specs"]
    older = script.Judge(tiny_llama_dir, main.questions(), logged=[plain], logged_specs=[spec], **main.reward_options())
    assert json.dumps(older.describe()) == json.dumps(described)
    bare = script.Judge(tiny_llama_dir, main.questions(), **main.reward_options()).describe()
    assert bare["logged_questions"] == [] and "logged_specs" not in bare
    with pytest.raises(UserError, match="question names must be unique"):  # across both kinds of logged question
        script.Judge(tiny_llama_dir, main.questions(), logged=["Is this text about a film?", spec])


def test_a_guards_weight_sets_its_share_of_the_eq4_mean(tiny_llama_dir):
    from zyn_ppo import script

    main = JudgeSpec("Is this review positive?", template="flan_review")
    guard = JudgeSpec("Is this text about a film?", template="flan_toxicity", weight=0.5)
    judge = script.Judge(tiny_llama_dir, main.questions(), guards=[guard], **main.reward_options())
    p_main = np.array(ZeroShotRewardModel(tiny_llama_dir, main.questions(), **main.reward_options()).probabilities(TEXTS))
    p_guard = np.array(ZeroShotRewardModel(tiny_llama_dir, guard.questions(), **guard.reward_options())
                       .probabilities(TEXTS))
    np.testing.assert_allclose(judge.metric_fn(TEXTS)["prob_ensemble"], (p_main + 0.5 * p_guard) / 1.5, atol=1e-6)
