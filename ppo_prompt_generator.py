"""ZYN prompt generator: PPO tunes a text-to-image prompt generator to a person's taste (paper Sec. 4.1.5).

The policy continues a short subject ("a cat", "a city at night") into a prompt for Stable Diffusion or
Midjourney; the judge (Flan-T5-large in the paper) reads the whole prompt and is asked each of the
person's yes/no questions ("Does this prompt describe a watercolor painting?", "Is this prompt about
nature?"); the reward is (p - 0.5) * 10 with p the mean probability of the target answers (Eq. 3 and 4 of
arXiv 2308.06385). The paper released no code for this experiment: the paper preset tunes the public GPT-2
prompt generator Gustavosta/MagicPrompt-Stable-Diffusion (with its own tokenizer), judged by
google/flan-t5-large, with the settings of configs/ppo_flan_sentiments.yml. Logged to metrics.jsonl in the
run directory at each evaluation: reward/mean, metrics/prob_positive (the first question's, the
original scripts' name), metrics/prob_<name> per question, metrics/prob_ensemble (Eq. 4, several questions) and the diversity of the generated text, metrics/distinct_1
and metrics/distinct_2: distinct word n-grams / all word n-grams over the continuations of one scoring
batch (method.chunk_size evaluation samples). metric_fn returns one value per sample, so each batch's
value is repeated for its samples and the logged number is the mean over batches. A generator that
repeats one prompt is useless however well it scores: read distinct_n beside prob_ensemble. Checks from outside
the judge: metrics/external_watercolor_words and metrics/external_nature_words, the share of continuations
(the subject never counts) with a watercolour word (WATERCOLOR_WORDS) or a nature word (NATURE_WORDS), whole
words in any case, and external_prompt_words, their mean per sample (as Eq. 4 averages the two questions):
what --reward external trains on (the oracle ceiling); metrics/ontask_prompt (the continuation is nearer its
own subject than the others, all-MiniLM-L6-v2).

The cpu preset asks gemma-3-270m the two questions the ways that agreed best with the keyword check
(benchmarks/results_promptgen_judge.md, `python -m benchmarks.bench_promptgen_judge`): "Prompt: <text>\nStyle:"
answered "watercolor" vs "photograph" and "Subject:" answered "nature" vs "city", both calibrated; the reward
is Eq. (4) over both, (p - 0.5) * 10. No labelled corpus of image prompts exists offline, so the labels are the
keyword check itself: on 1,200 continuations of the untrained policy, nature words in 88 (AUROC held out 0.66
[0.54, 0.75]; the best, SmolLM2's Yes/No question and its negation "about a city?", 0.69 [0.58, 0.79], but its
P barely moves, IQR 0.03 against 0.60; the old cpu judge, SmolLM2 asked Yes/No in TEMPLATE: 0.54), watercolour
words in 5, too few, so watercolour was measured on 32 HAND-WRITTEN prompts (benchmarks/promptgen_handwritten.txt;
0.91 [0.72, 1.00] on 16 held out; the old cpu judge 0.66). Caveats: keyword labels, not a person's taste;
the hand-written set is small and written here; the judge reads subject + continuation while the keywords
count the continuation alone. Other --question/--target/--name are asked the paper's way (Yes/No in TEMPLATE).

    python ppo_prompt_generator.py --preset cpu                 # offline, 10-14 min on 2 CPU cores
    python ppo_prompt_generator.py --preset cpu --print-config  # what it would load, then exit
    python ppo_prompt_generator.py --preset cpu --reward external  # the oracle: trained on external_prompt_words
    python ppo_prompt_generator.py                              # the paper: hub models, a GPU
    accelerate launch ppo_prompt_generator.py                   # the paper on several GPUs
    python ppo_prompt_generator.py --render                     # then draw first and last evaluation (diffusers, GPU)
    python ppo_prompt_generator.py --preset cpu --question "Is this prompt about space?" "Is this prompt too long?" --target yes no --name space long
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zyn_ppo import script
from zyn_reward import JudgeSpec, YesNoQuestion

QUESTIONS = ("Does this prompt describe a watercolor painting?", "Is this prompt about nature?")  # the paper's
PRESETS = {
    "paper": script.Preset(judge="google/flan-t5-large", policy="Gustavosta/MagicPrompt-Stable-Diffusion",
                           config="configs/ppo_flan_sentiments.yml", tracker="wandb", prompts="data/image_subjects.txt",
                           external="distinct-n"),
    # a laptop: gemma-3-270m asked each question the way that measured best (benchmarks/results_promptgen_judge.md:
    # agreement with the keyword check; watercolour on hand-written prompts, AUROC 0.91, as the policy's own
    # samples hold too few watercolour words; nature on the policy's samples, 0.66), the reward Eq. (4) over both:
    # P("watercolor" after "Style:") and P("nature" after "Subject:"), calibrated
    "cpu": script.Preset(judge="gemma-3-270m", policy="smollm2-135m-instruct", prompts="data/image_subjects.txt",
                         external="distinct-n, keywords", oracle="external_prompt_words",
                         asking=JudgeSpec("Style:", template="Prompt: {text}\n{question}",
                                          answers=("watercolor", "photograph"), calibrate=True, asks=QUESTIONS[0],
                                          model="gemma-3-270m"),
                         guards=[JudgeSpec("Subject:", template="Prompt: {text}\n{question}", answers=("nature", "city"),
                                           calibrate=True, asks=QUESTIONS[1], model="gemma-3-270m")]),
}
NUM_EVAL = 64  # the last 64 subjects are held out for evaluation
TEMPLATE = "Prompt: {text}\n\n {question} Response:"
# the external check (keyword rates of the continuation, whole words, any case), one word list per question
WATERCOLOR_WORDS = ("watercolou?rs?", "aquarelles?", "paintings?", "painted", "paints?", "painterly", "brush ?strokes?",
                    "brushwork", "gouache", "ink washes", "ink wash", "wet-on-wet", "pigments?", "pastels?")
NATURE_WORDS = ("nature", "natural", "landscapes?", "wilderness", "forests?", "woods", "woodlands?", "jungles?",
                "mountains?", "hills?", "valleys?", "rivers?", "streams?", "lakes?", "oceans?", "seas?", "waves",
                "beach(?:es)?", "waterfalls?", "flowers?", "blossoms?", "trees?", "leaves", "grass", "meadows?",
                "gardens?", "desert", "sunsets?", "sunrise", "clouds?", "sky", "wildlife")


@dataclass
class Args(script.ScriptArgs):
    question: tuple[str, ...] = QUESTIONS
    """one or more yes/no questions about subject + continuation (the person's taste), ensembled as in Eq. (4)"""
    target: tuple[Literal["yes", "no"], ...] = ()
    """rewarded answer per question, yes or no (empty: yes for every question)"""
    name: tuple[str, ...] = ()
    """metric name per question, logged as metrics/prob_<name> (empty: a slug of each question)"""
    render: bool = False
    """after training, draw the first and last evaluation's prompts into <run dir>/render.png (needs diffusers and a GPU)"""
    render_model: str = "stabilityai/sd-turbo"
    """text-to-image model for --render: a diffusers pipeline, hub name or folder"""
    render_count: int = 4
    """prompts drawn from each of the two evaluations (columns of the grid)"""
    render_steps: int = 1
    """denoising steps for --render (sd-turbo: 1; Stable Diffusion 1.5: about 25)"""
    render_guidance: float = 0.0
    """classifier-free guidance scale for --render (sd-turbo: 0; Stable Diffusion 1.5: about 7.5)"""


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the short subjects of the prompt file (both presets)."""
    prompts = script.read_prompt_lines("data/image_subjects.txt", NUM_EVAL)
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:]


def make_reward(args: Args) -> script.Judge:
    """The person's questions asked of the judge. The default questions with the default targets and names are
    asked the preset's measured ways (Preset.asking for the first, Preset.guards for the others, each its own
    template and answer words, Eq. 4 over all), where the preset has them; any other questions the paper's way
    (Yes/No in TEMPLATE, (p - 0.5) * 10)."""
    targets = args.target or ("yes",) * len(args.question)
    names = args.name or (None,) * len(args.question)
    if len(targets) != len(args.question) or len(names) != len(args.question):
        raise script.UserError(f"--target and --name need one value per question ({len(args.question)} questions)")
    preset = PRESETS[args.preset]
    asked = (*args.question, *[f"--{flag} {' '.join(values)}" for flag, values in (("target", args.target),
                                                                              ("name", args.name)) if values])
    if script.asks_the_measured_way(args.preset, preset.asking, asked, QUESTIONS, paper=f"Yes/No in {TEMPLATE!r}"):
        asking = preset.asking.check()
        return script.Judge(args.judge, asking.questions(), guards=[g.check() for g in preset.guards],
                            **asking.reward_options())
    return script.Judge(args.judge, [YesNoQuestion(q, target=t, template=TEMPLATE, name=n)
                                     for q, t, n in zip(args.question, targets, names)])


def words_check():
    """The default questions' keyword rates in the continuation alone (the subject never counts, so "a forest"
    does not score by itself): external_watercolor_words (WATERCOLOR_WORDS), external_nature_words
    (NATURE_WORDS) and external_prompt_words, their mean per sample (as Eq. 4 averages the two questions):
    what --reward external trains on."""
    return script.keyword_check({"external_watercolor_words": script.word_pattern(WATERCOLOR_WORDS),
                                 "external_nature_words": script.word_pattern(NATURE_WORDS)},
                                mean="external_prompt_words")


def external_check(args: Args, eval_prompts: Sequence[str]):
    """Diversity of the continuations of one scoring batch (both presets), repeated for each sample; keyword
    rates of the default questions (words_check); on task: the continuation still describes its subject
    (ontask_prompt, script.prompt_relevance_check, among the evaluation subjects that load_prompts read)."""
    ontask = script.prompt_relevance_check(eval_prompts, "ontask_prompt")
    words = words_check()

    def diversity(samples: list[str], outputs: list[str] | None = None, **kwargs) -> dict[str, list[float]]:
        texts = samples if outputs is None else outputs
        return {**{f"distinct_{n}": [script.distinct_n(texts, n)] * len(samples) for n in (1, 2)},
                **words(samples, outputs=outputs), **ontask(samples, outputs=outputs, **kwargs)}

    return diversity


def render(args: Args, run_dir: Path) -> Path | None:
    """--render: draw the first and last evaluation's prompts with plots/render_prompts.py (optional)."""
    from plots.render_prompts import render_grid

    return render_grid(run_dir, args.render_model, args.render_count, args.render_steps, args.render_guidance, args.seed)


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__,
                after=lambda args, run_dir: render(args, run_dir) if args.render else None)
