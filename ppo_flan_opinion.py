"""ZYN opinion: PPO steers the opinion a language model expresses about a topic, rewarded by a yes/no question.

Prompts invite an opinion on --topic ("My honest opinion about guns is that"); the judge (Flan-T5-large in
the paper) reads prompt + continuation and is asked "Is this text in favour of stricter gun control?"; the
reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385). The paper reports this experiment (on guns)
with a GPT-2 policy but released no code: the paper preset trains gpt2 (its own tokenizer) with
google/flan-t5-large as judge and the settings of configs/ppo_flan_sentiments.yml. Logged to metrics.jsonl
in the run directory at each evaluation: reward/mean, metrics/prob_positive (P of the rewarded answer, the
original scripts' name), metrics/prob_<question> for it and for a differently worded question that is never
rewarded (asked the paper's way; it rises with prob_positive if the policy learnt the stance, not one
phrasing the judge likes), metrics/external_stance (from outside the judge: all-MiniLM-L6-v2 similarity of
prompt + continuation to statements of --stance against statements of its opposite --against, in [0, 1];
see external_check), metrics/ontask_topic and, in the cpu preset, metrics/external_vader (VADER compound
score mapped to [0, 1]: tells a change of tone from a change of stance).

The cpu preset asks gemma-3-270m to complete "Text: <text>\nStance:" with "for" (rewarded) or "against"
(calibrated). Measured on real text, 26 held-out gun-control claims of the IBM Debater Claim Stance dataset
(`python -m benchmarks.bench_tune --task stance_claims`, benchmarks/results_tune.md): AUROC 0.88 [0.72, 0.99],
gemma's best way on the choosing half (the tuner's overall pick, SmolLM2 "Opinion:", held out 0.69; the
previous preset, SmolLM2 in its chat template "Stance:", 0.74 there and 0.57 on 20 hand-written statements);
with 6 claims in favour held out the intervals are wide, and on claims against 55 other motions every way of
asking either judge is at chance (`--task stance_motions`). In training (three seeds each) the external stance
check gained +0.026 by the last evaluation against the previous preset's +0.009, though the two curves overlap
before it (docs/results.md). The external stance check
scores 0.815 [0.67, 0.92] on the 53 real claims (0.75 on the 40 hand-written statements, whose statements
were picked on them); --reward external trains on it (the oracle). The measured way stands for the default
question only: another --stance, --topic or --question is asked the paper's way (Yes/No, in the chat template
where the judge has one). --judge-spec FILE asks the default question another measured way.

    python ppo_flan_opinion.py --preset cpu                 # offline, 8-10 min on 2 CPU cores
    python ppo_flan_opinion.py --preset cpu --print-config  # what it would load, then exit
    python ppo_flan_opinion.py --preset cpu --reward external  # the oracle: trains on external_stance
    python ppo_flan_opinion.py                              # the paper: hub models, a GPU
    accelerate launch ppo_flan_opinion.py                   # the paper on several GPUs
    python ppo_flan_opinion.py --preset cpu --stance "against stricter gun control"
    python ppo_flan_opinion.py --preset cpu --topic "nuclear power" --stance "in favour of nuclear power"
    python ppo_flan_opinion.py --preset cpu --topic abortion --stance pro-choice --against pro-life

Measure a judge on the stances first:
    python -m benchmarks.bench_tune --task stance     # judges x ways of asking (20 choose, 20 held out)
    python -m benchmarks.bench_stance_check           # the external stance check
"""

from __future__ import annotations

from dataclasses import dataclass

from zyn_ppo import script
from zyn_reward import JudgeSpec, UserError

QUESTION = "Is this text in favour of stricter gun control?"  # the default --question with --stance filled in
PRESETS = {
    "paper": script.Preset(judge="google/flan-t5-large", policy="gpt2", config="configs/ppo_flan_sentiments.yml",
                           tracker="wandb", prompts="data/opinion_prompts.txt",
                           external="all-MiniLM-L6-v2 stance similarity"),
    # a laptop: gemma-3-270m completes "Text: <text>\nStance:" with "for" (rewarded) or "against", calibrated:
    # held-out AUROC 0.88 [0.72, 0.99] on 26 real gun-control claims (bench_tune --task stance_claims; the same as
    # configs/opinion_gemma_stance.json); at chance on stance across 55 motions (--task stance_motions). The oracle
    # trains on the external stance check (AUROC 0.815 on the 53 real claims; benchmarks/bench_stance_check)
    "cpu": script.Preset(judge="gemma-3-270m", policy="smollm2-135m-instruct",
                         prompts="data/opinion_prompts.txt", external="all-MiniLM-L6-v2 stance similarity, vaderSentiment",
                         oracle="external_stance",
                         asking=JudgeSpec("Stance:", template="Text: {text}\n{question}", answers=("for", "against"),
                                          calibrate=True, asks=QUESTION, model="gemma-3-270m")),
}
# what else a text could be about: the on-topic check asks whether a continuation is nearer --topic than these
OTHER_TOPICS = ("nuclear power", "immigration", "taxes", "football", "cooking", "music", "the weather", "cats",
                "smartphones", "holidays", "healthcare", "climate change", "schools", "cars", "movies", "religion")
NUM_EVAL = 10  # the last 10 prompt wordings are held out for evaluation,
EVAL_REPEATS = 4  # each sampled 4 times: 40 evaluation samples


@dataclass
class Args(script.ScriptArgs):
    topic: str = "guns"
    """what the prompts ask an opinion about: fills {topic} in data/opinion_prompts.txt and in the questions"""
    stance: str = "in favour of stricter gun control"
    """the opinion to reward: fills {stance} in the questions"""
    against: str | None = None
    """the opposite opinion, for the external stance check (None: --stance with "in favour of" and "against"
    swapped, e.g. "against stricter gun control"; needed when --stance has neither)"""
    question: str = "Is this text {stance}?"
    """rewarded yes/no question about prompt + continuation, target Yes; logged as metrics/prob_positive"""
    heldout_question: str = "Does the author of this text argue {stance}?"
    """differently worded question, never rewarded, only logged"""
    judge_spec: str | None = None
    """a JSON file from `python -m zyn_reward tune --out FILE`: how the default question is asked instead of the
    preset's measured way (its judge must be --judge's; another --stance/--question is still asked the paper's way)"""


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the opinion prompts with {topic} filled in (both presets)."""
    lines = script.read_prompt_lines("data/opinion_prompts.txt", NUM_EVAL)
    prompts = [line.replace("{topic}", args.topic) for line in lines]
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:] * EVAL_REPEATS


def make_reward(args: Args) -> script.Judge:
    """The rewarded stance question and the held-out one, asked of the same judge (loaded once). The rewarded
    one is asked the preset's measured way when it is the question that was measured (QUESTION), else the
    paper's way (paper_way); the held-out one always the paper's way."""
    fill = lambda text: text.replace("{stance}", args.stance).replace("{topic}", args.topic)  # noqa: E731
    question, measured = fill(args.question), PRESETS[args.preset].asking
    if args.judge_spec:
        measured = JudgeSpec.from_file(args.judge_spec)
        if measured.model and measured.model != args.judge:
            raise UserError(f"--judge-spec {args.judge_spec} was measured on {measured.model}, the judge is "
                            f"{args.judge}: add --judge {measured.model}")
    paper = paper_way(question)
    asking = measured.check() if script.asks_the_measured_way(args.preset, measured, question,
                                                                paper=paper.describe()) else paper
    return script.Judge(args.judge, asking.questions(), **asking.reward_options(),
                        logged=[paper_way(fill(args.heldout_question))])


def paper_way(question: str) -> JudgeSpec:
    """Yes/No in a Flan-style template, (P - 0.5) * 10; in the judge's chat template where it has one (as this
    script asked before the cpu preset's way was measured)."""
    return JudgeSpec(question, template="flan_toxicity", chat_template=True)


SIDES = ("in favour of ", "in favor of ", "against ")  # how a stance names its side, the opposite's last


def split_stance(stance: str) -> tuple[bool, str] | None:
    """(in favour?, what of) for "in favour of X" / "against X", else None."""
    low = stance.strip().lower()
    side = next((s for s in SIDES if low.startswith(s)), None)
    return None if side is None else (side != "against ", stance.strip()[len(side):].strip())


def counter_stance(args: Args) -> str:
    """The opposite of --stance: --against, else "in favour of X" <-> "against X"."""
    if args.against is not None:
        if not args.against.strip() or args.against.strip() == args.stance.strip():
            raise script.UserError(f"--against must name the opposite of --stance {args.stance!r}, got {args.against!r}")
        return args.against.strip()
    parts = split_stance(args.stance)
    if parts is None or not parts[1]:
        raise script.UserError(f"--against: give the opposite of --stance {args.stance!r} (it is derived only from "
                               "'in favour of X' or 'against X')")
    return f"against {parts[1]}" if parts[0] else f"in favour of {parts[1]}"


def stance_statements(stance: str, against: str) -> tuple[list[str], list[str]]:
    """What the external stance check compares a text with: short statements of --stance and of its opposite
    ("I am in favour of X.", "in favour of X", and where both sides name the same X: "I support X.", "We need
    X." against "I oppose X.", "We do not need X.")."""
    pro, con = [f"I am {stance}.", stance], [f"I am {against}.", against]
    a, b = split_stance(stance), split_stance(against)
    if a and b and a[0] != b[0] and a[1].lower() == b[1].lower():
        what = a[1]
        agree, disagree = [f"I support {what}.", f"We need {what}."], [f"I oppose {what}.", f"We do not need {what}."]
        pro, con = (pro + agree, con + disagree) if a[0] else (pro + disagree, con + agree)
    return pro, con


def external_check(args: Args):
    """Scores from outside the judge, none of them its weights: external_stance (both presets; what --reward
    external trains on in the cpu preset): sigmoid of how much nearer prompt + continuation is to statements of
    --stance than to statements of its opposite (--against), by all-MiniLM-L6-v2 cosine similarity (see
    stance_statements, script.stance_check); VADER in the cpu preset (tells a change of tone from a change of
    stance); and on topic (ontask_topic, both presets): the share of OTHER_TOPICS that the continuation is less
    similar to than to --topic (see script.prompt_relevance_check)."""
    vader = script.vader_check() if args.preset == "cpu" else (lambda samples: {})
    ontask = script.prompt_relevance_check([args.topic, *OTHER_TOPICS], "ontask_topic")
    stance = script.stance_check(*stance_statements(args.stance, counter_stance(args)), "external_stance")

    def checks(samples: list[str], outputs: list[str] | None = None, **kwargs) -> dict[str, list[float]]:
        return {**vader(samples), **stance(samples),
                **ontask(samples, prompts=[args.topic] * len(samples), outputs=samples if outputs is None else outputs)}

    return checks


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__,
                extra_info=lambda args: {"topic": args.topic, "stance": args.stance, "against": counter_stance(args)})
