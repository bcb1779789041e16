"""ZYN opinion: PPO steers the opinion a language model expresses about a topic, rewarded by a yes/no question.

Prompts invite an opinion on --topic ("My honest opinion about guns is that"); the judge (Flan-T5-large in
the paper) reads prompt + continuation and is asked "Is this text in favour of stricter gun control?"; the
reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385). The paper reports this experiment (on guns)
with a GPT-2 policy but released no code: the paper preset trains gpt2 (its own tokenizer) with
google/flan-t5-large as judge and the settings of configs/ppo_flan_sentiments.yml. Logged to metrics.jsonl
in the run directory at each evaluation: reward/mean, metrics/prob_positive (P(Yes) to the rewarded
question, the original scripts' name), metrics/prob_<question> for it and for a differently worded question
that is never rewarded (it rises with prob_positive if the policy learnt the stance, not one phrasing the
judge likes) and, in the cpu preset,
metrics/external_vader (VADER compound score mapped to [0, 1]: tells a change of tone from a change of
stance).

    python ppo_flan_opinion.py --preset cpu                 # offline, ~13 min on 2 CPU cores
    python ppo_flan_opinion.py --preset cpu --print-config  # what it would load, then exit
    python ppo_flan_opinion.py                              # the paper: hub models, a GPU
    accelerate launch ppo_flan_opinion.py                   # the paper on several GPUs
    python ppo_flan_opinion.py --preset cpu --stance "against stricter gun control"
    python ppo_flan_opinion.py --preset cpu --topic "nuclear power" --stance "in favour of nuclear power"

Check first that the judge can tell the stances apart (the embedded 135M judge cannot: AUROC 0.52):
    python -m zyn_reward eval --labeled data/gun_stance_check.csv --template flan_toxicity \
        --question "Is this text in favour of stricter gun control?" --model smollm2-135m-instruct
"""

from __future__ import annotations

from dataclasses import dataclass

from zyn_ppo import script
from zyn_reward import TEMPLATES, YesNoQuestion

PRESETS = {
    "paper": script.Preset(judge="google/flan-t5-large", policy="gpt2", config="configs/ppo_flan_sentiments.yml",
                           tracker="wandb", prompts="data/opinion_prompts.txt"),
    "cpu": script.Preset(judge="smollm2-135m-instruct", policy="smollm2-135m-instruct",
                         prompts="data/opinion_prompts.txt", external="vaderSentiment"),
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
    question: str = "Is this text {stance}?"
    """rewarded yes/no question about prompt + continuation, target Yes; logged as metrics/prob_positive"""
    heldout_question: str = "Does the author of this text argue {stance}?"
    """differently worded question, never rewarded, only logged"""


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the opinion prompts with {topic} filled in (both presets)."""
    lines = script.read_prompt_lines("data/opinion_prompts.txt", NUM_EVAL)
    prompts = [line.replace("{topic}", args.topic) for line in lines]
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:] * EVAL_REPEATS


def make_reward(args: Args) -> script.Judge:
    """The rewarded stance question and the held-out one, asked of the same judge (loaded once)."""
    fill = lambda text: text.replace("{stance}", args.stance).replace("{topic}", args.topic)  # noqa: E731
    template = TEMPLATES["flan_toxicity"]
    return script.Judge(args.judge, [YesNoQuestion(fill(args.question), target="yes", template=template)],
                        logged=[YesNoQuestion(fill(args.heldout_question), target="yes", template=template)])


def external_check(args: Args):
    """Scores from outside the judge: VADER in the cpu preset (tells a change of tone from a change of
    stance), and on topic (ontask_topic, both presets): the share of OTHER_TOPICS that the continuation is
    less similar to than to --topic (all-MiniLM-L6-v2, see script.prompt_relevance_check)."""
    vader = script.vader_check() if args.preset == "cpu" else (lambda samples: {})
    ontask = script.prompt_relevance_check([args.topic, *OTHER_TOPICS], "ontask_topic")

    def checks(samples: list[str], outputs: list[str] | None = None, **kwargs) -> dict[str, list[float]]:
        return {**vader(samples), **ontask(samples, prompts=[args.topic] * len(samples),
                                           outputs=samples if outputs is None else outputs)}

    return checks


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__,
                extra_info=lambda args: {"topic": args.topic, "stance": args.stance})
