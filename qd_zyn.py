"""Quality-diversity search over movie reviews with ZYN questions (MAP-Elites, as in QDAIF).

An LM proposes new reviews by continuing few-shot lists of archive elites (LMX, the mutation operator of
QDAIF, Bradley et al. 2023, arXiv 2310.13032); one ZYN question scores quality (P(yes) to "Is
this movie review positive?", in [0, 1]) and one or two more ZYN questions place each review on the
descriptor axes (default: funny? science fiction?). The archive keeps, per descriptor bin, the best review
found so far.

Judges: the paper preset asks Flan-T5-large every question Yes/No. The cpu preset's judge, gemma-3-270m, is
near chance asked Yes/No on real reviews, so each question is asked the way measured best on real labelled
text (MEASURED; benchmarks/results_tune.md, held-out AUROC): "Sentiment:" positive/negative (0.92), "Tone:"
funny/serious (0.79), "Genre:" science/drama, calibrated (0.88). A question without a measured phrasing is
asked Yes/No in --template. The mutation LM is SmolLM2-135M-Instruct.

Parents (--parents): mixed, the default (one hand-made seed review among archive elites in every mutation
prompt), archive elites only (plain MAP-Elites), or the seed reviews only (the baseline that the search must
beat: same proposals, same judge calls, no feedback from the archive).

Bins: small judges are badly calibrated (their P(yes) piles up in a narrow band), so uniform bins on [0, 1]
leave most cells empty. As in QDAIF's non-uniform bins, the bin edges of each axis are the quantiles of that
descriptor over the initial population (`--init-size` reviews written from hand-made seed examples), fixed
once and saved in state.json; every later review is binned with these frozen edges.

    python qd_zyn.py --preset cpu                              # offline: embedded gemma-3-270m judge, SmolLM2
    python qd_zyn.py --preset cpu --parents seeds              # its baseline
    python qd_zyn.py --preset cpu --total-steps 20 --bins 4 --descriptors "Is this review about the plot?"
    python qd_zyn.py                                            # paper preset: hub models (needs internet)
    python qd_zyn.py --preset paper --print-config

Outputs in the run directory (`--logging-dir`, default runs/qd_zyn__<preset>__seed<seed>__<hash>):
archive.jsonl (one elite per line: bin, text, quality, descriptors, iteration), metrics.jsonl (one line per
iteration: step, qd/score = sum of elite qualities, qd/coverage = filled bins / all bins, qd/max_quality,
qd/mean_quality, qd/accepted, time/elapsed), state.json (bin edges, last finished iteration),
run.json and config.yaml (what defines the search, as for the PPO runs) and archive.png/.svg (heat map of
elite quality per bin). Running the same command again resumes from the archive in the run directory.

The script layer is the PPO scripts' (zyn_ppo/script.py): the same common flags, presets, config YAML
(configs/qd_zyn.yml; iterations are train.total_steps, proposals per iteration train.batch_size, sampling
method.gen_kwargs), run directory and run.json; only what runs differs (`search` instead of a trainer).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, ClassVar, Literal

import numpy as np
import torch

import zyn_ppo
from zyn_ppo import UserError, presets, runio, script
from zyn_reward import JudgeSpec, ZeroShotRewardModel

EMBEDDED = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
# Ways of asking measured on real labelled text for gemma-3-270m (benchmarks/results_tune.md, held-out AUROC):
# positive vs negative movie reviews 0.92, comedy vs other films 0.79, sci-fi vs other films 0.88. Asked Yes/No,
# the same judge is near chance on real reviews (0.44): a question listed here is asked its measured way when
# the judge is the one it was measured on, any other question Yes/No in --template.
MEASURED = {spec.asks: spec for spec in (presets.sentiment()["cpu"].asking, presets.funny_tone(), presets.scifi_genre())}


@dataclass
class Args(script.ScriptArgs):
    # flags that stand for settings of the config (None: the config's, see --print-config)
    CONFIG_FLAGS: ClassVar[dict[str, str]] = {
        "batch_size": "train.batch_size", "max_new_tokens": "method.gen_kwargs.max_new_tokens",
        "temperature": "method.gen_kwargs.temperature", "top_p": "method.gen_kwargs.top_p",
        "project_name": "train.project_name"}
    question: str = "Is this movie review positive?"
    """the ZYN question whose P(yes) is the quality of a review"""
    descriptors: list[str] = field(default_factory=lambda: ["Is this movie funny?", "Is this movie science fiction?"])
    """one or two ZYN questions whose P(yes) are the descriptor axes"""
    template: str = "flan_review"
    """zyn_reward TEMPLATES key of the questions asked Yes/No (those without a way of asking measured on the judge)"""
    bins: int | None = None
    """bins per descriptor axis (edges at quantiles of the initial population); paper 10, cpu 5"""
    init_size: int | None = None
    """size of the initial population (also the sample the bin edges are estimated from); paper 64, cpu 32"""
    batch_size: int | None = None
    """reviews proposed per iteration, one generate call and one judge call (train.batch_size)"""
    num_examples: int = 3
    """archive elites shown as few-shot examples in each mutation prompt"""
    parents: Literal["mixed", "archive", "seeds"] = "mixed"
    """where the few-shot examples come from: mixed, one seed review among archive elites in every prompt (the
    seeds keep proposals review-shaped; beat the baseline in 3 of 3 seeds, docs/results.md); archive elites
    only (plain MAP-Elites, which lost to the baseline); or the hand-made seed reviews only (the baseline: the
    same number of proposals, binned the same way, with no feedback from the archive)"""
    max_new_tokens: int | None = None
    """maximum length of a proposed review in tokens (method.gen_kwargs.max_new_tokens)"""
    temperature: float | None = None
    """sampling temperature of the mutation LM (method.gen_kwargs.temperature)"""
    top_p: float | None = None
    """nucleus sampling of the mutation LM (method.gen_kwargs.top_p)"""
    project_name: str | None = None
    """W&B project name (train.project_name)"""
    judge_batch_size: int = 32
    """judge forward-pass batch size (may change when a search continues)"""
    plot_interval: int = 10
    """redraw archive.png every this many iterations (and at the end)"""


PRESETS = {
    # the policy is the mutation LM: configs/qd_zyn.yml names SmolLM2-1.7B-Instruct
    "paper": script.Preset(judge="google/flan-t5-large", config="configs/qd_zyn.yml", tracker="wandb",
                           prompts="SEED_REVIEWS of qd_zyn.py: few-shot examples of the initial population",
                           defaults={"bins": 10, "init_size": 64}),
    # batch 16 (configs/cpu.yml): on CPU, 8x more sequences per decoding step cost only about 2x the time
    # the judge: gemma-3-270m asked the ways measured on real critics' texts (MEASURED); the mutation LM: SmolLM2
    "cpu": script.Preset(judge=GEMMA, policy=EMBEDDED,
                         prompts="SEED_REVIEWS of qd_zyn.py: few-shot examples of the initial population",
                         changes={"train.total_steps": 20, "method.gen_kwargs.max_new_tokens": 40},
                         defaults={"bins": 5, "init_size": 32}),
}

# Hand-written seed reviews: few-shot examples for the initial population only (never archived themselves).
SEED_REVIEWS = [
    "A gripping thriller with a clever plot. I was on the edge of my seat until the very last scene.",
    "The lead actress gives a stunning performance; every glance says more than the dialogue.",
    "I laughed so hard I cried. The jokes land one after another and the cast clearly had fun.",
    "Two hours of my life I will never get back. Flat characters and a story that goes nowhere.",
    "Beautiful photography, but the acting is wooden and the script feels like a first draft.",
    "A silly, warm comedy about a dog who runs a bakery. Perfect for a rainy Sunday.",
    "The director keeps the tension high, and the soundtrack is haunting. A small masterpiece.",
    "The actors seem bored, and so was I. Even the car chases are dull.",
]


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """The search's "prompts": the hand-written seed reviews that the initial population is written from."""
    return list(SEED_REVIEWS), []


def make_reward(args: Args) -> script.Judge:
    """The judge and its questions as the run records them: the quality question, and each axis as a guard
    (a question asked its own way of the same judge). The search reads their probabilities (make_judges,
    score), never this Judge's reward."""
    quality, *axes = specs(args)
    return script.Judge(args.judge, quality.questions(), guards=axes, **quality.reward_options())


def external_check(args: Args):
    return lambda samples: {}  # nothing beside the judge


def extra_info(args: Args) -> dict:
    """The search's own settings: part of what defines the run (run.json)."""
    return {"qd": {k: getattr(args, k) for k in ("bins", "init_size", "num_examples", "parents")}}


# ------------------------------------------------------------------------------------------------------
# MAP-Elites pieces: bins from quantiles, bin assignment, the archive update rule
# ------------------------------------------------------------------------------------------------------


def quantile_edges(values: list[float], bins: int) -> list[float]:
    """Inner bin edges (bins - 1 of them) at the 1/bins, 2/bins, ... quantiles of `values`."""
    return [float(q) for q in np.quantile(np.asarray(values, dtype=np.float64), np.arange(1, bins) / bins)]


def bin_index(descriptors: list[float], edges: list[list[float]]) -> tuple[int, ...]:
    """The cell of a point: on each axis, the number of inner edges at or below its value (0..bins-1)."""
    return tuple(int(np.searchsorted(e, d, side="right")) for d, e in zip(descriptors, edges))


def try_insert(archive: dict[tuple[int, ...], dict], elite: dict) -> bool:
    """Put `elite` in its cell if the cell is empty or holds a strictly worse elite; return whether it did."""
    cell = tuple(elite["bin"])
    if cell in archive and archive[cell]["quality"] >= elite["quality"]:
        return False
    archive[cell] = elite
    return True


def qd_metrics(archive: dict[tuple[int, ...], dict], num_cells: int) -> dict[str, float]:
    qualities = [e["quality"] for e in archive.values()]
    return {
        "qd/score": float(sum(qualities)),
        "qd/coverage": len(qualities) / num_cells,
        "qd/max_quality": max(qualities) if qualities else 0.0,
        "qd/mean_quality": float(np.mean(qualities)) if qualities else 0.0,
        "qd/num_elites": len(qualities),
    }


# ------------------------------------------------------------------------------------------------------
# Data: few-shot mutation prompts
# ------------------------------------------------------------------------------------------------------


def few_shot(archive: dict[tuple[int, ...], dict], seeds: list[str], parents: str, num_examples: int) -> list[str]:
    """The examples of one mutation prompt (module `random`): `num_examples` archive elites (parents
    "archive"), seed reviews ("seeds"), or one seed review among archive elites in a random place ("mixed")."""
    elites = [e["text"] for e in archive.values()]
    if parents == "seeds":
        return random.sample(seeds, min(num_examples, len(seeds)))
    if parents == "archive":
        return random.sample(elites, min(num_examples, len(elites)))
    examples = random.sample(elites, min(num_examples - 1, len(elites)))
    examples.insert(random.randrange(len(examples) + 1), random.choice(seeds))
    return examples


def mutation_prompt(examples: list[str]) -> str:
    """A few-shot list that the LM continues with one more review (LMX, the mutation of QDAIF)."""
    shots = "".join(f"Review {i + 1}: {text}\n" for i, text in enumerate(examples))
    return f"Here are some short movie reviews.\n\n{shots}Review {len(examples) + 1}:"


def clean(text: str) -> str:
    """The first line of a generation that is not a preamble ("Here's a new review:"), without a
    'Review N:' prefix or wrapping quotes."""
    for line in text.strip().split("\n"):
        line = line.strip()
        if line.lower().startswith("review") and ":" in line[:12]:
            line = line.split(":", 1)[1].strip()
        if line and not line.endswith(":"):
            return line.strip('"').strip()
    return ""


@torch.no_grad()
def propose(model, tokenizer, examples: list[list[str]], args: Args) -> list[str]:
    """One batched generate call: one new review per list of few-shot examples."""
    prompts = [mutation_prompt(ex) for ex in examples]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(
        **enc.to(model.device), do_sample=True, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
    )
    return [clean(t) for t in tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)]


# ------------------------------------------------------------------------------------------------------
# Reward: one ZYN model asks the quality question and the descriptor questions in one call
# ------------------------------------------------------------------------------------------------------


def specs(args: Args) -> list[JudgeSpec]:
    """How the quality question and each descriptor question are asked (quality first): the way measured on
    this judge where MEASURED has one, else Yes/No in --template."""
    if not 1 <= len(args.descriptors) <= 2:
        raise UserError(f"--descriptors takes one or two questions, got {len(args.descriptors)}")
    asked = [args.question, *args.descriptors]
    if len(set(asked)) != len(asked):
        raise UserError(f"--question and --descriptors must be different questions, got {asked}")
    measured = lambda q: MEASURED[q] if q in MEASURED and MEASURED[q].model == args.judge else None  # noqa: E731
    return [measured(q) or JudgeSpec(q, template=args.template) for q in asked]


def make_judges(args: Args, shared_model=None, shared_tokenizer=None) -> list[ZeroShotRewardModel]:
    """One ZeroShotRewardModel per question of specs(args) (quality first), all on one copy of the judge."""
    first, *rest = specs(args)
    model = args.judge if shared_model is None else shared_model
    judges = [ZeroShotRewardModel(model, questions=first.questions(), tokenizer=shared_tokenizer,
                                  batch_size=args.judge_batch_size, **first.reward_options())]
    return judges + [ZeroShotRewardModel(judges[0].model, questions=spec.questions(), tokenizer=judges[0].tokenizer,
                                         batch_size=args.judge_batch_size, **spec.reward_options()) for spec in rest]


def score(judges: list[ZeroShotRewardModel], texts: list[str]) -> tuple[list[float], list[list[float]]]:
    """Quality (P of the first question's target answer) and the descriptors of each text."""
    quality, *axes = [[float(p) for p in rm.probabilities(texts)] for rm in judges]
    return quality, [list(d) for d in zip(*axes)]


# ------------------------------------------------------------------------------------------------------
# Run directory: archive, state, metrics, figure
# ------------------------------------------------------------------------------------------------------


def plot_archive(archive: dict, edges: list[list[float]], args: Args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = (args.bins, args.bins) if len(edges) == 2 else (1, args.bins)
    grid = np.full(shape, np.nan)
    for cell, elite in archive.items():
        row, col = (cell[1], cell[0]) if len(cell) == 2 else (0, cell[0])
        grid[row, col] = elite["quality"]
    fig, ax = plt.subplots(figsize=(6.4, 5.2 if len(edges) == 2 else 2.4))
    im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label=f"quality: P(yes) to {args.question!r}")
    if args.bins <= 10:
        for (row, col), q in np.ndenumerate(grid):
            if not np.isnan(q):
                ax.text(col, row, f"{q:.2f}", ha="center", va="center", fontsize=7, color="w" if q < 0.6 else "k")

    def labels(e: list[float]) -> list[str]:
        bounds = [0.0, *e, 1.0]
        return [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(bounds[:-1], bounds[1:])]

    ax.set_xticks(range(args.bins), labels(edges[0]), rotation=45, ha="right", fontsize=7)
    ax.set_xlabel(f"P(yes) to {args.descriptors[0]!r}")
    if len(edges) == 2:
        ax.set_yticks(range(args.bins), labels(edges[1]), fontsize=7)
        ax.set_ylabel(f"P(yes) to {args.descriptors[1]!r}")
    else:
        ax.set_yticks([])
    m = qd_metrics(archive, args.bins ** len(edges))
    ax.set_title(f"MAP-Elites archive: QD score {m['qd/score']:.2f}, coverage {m['qd/coverage']:.0%}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------
# Search
# ------------------------------------------------------------------------------------------------------


def load_policy(name: str):
    """The mutation LM, in fp32, and its left-padding tokenizer."""
    return zyn_ppo.load_causal_lm(name).eval(), zyn_ppo.load_tokenizer(name)


def search(args: Args, reward_fn: Callable, prompts: list[str], eval_prompts: list[str], metric_fn: Callable,
           config: zyn_ppo.TRLConfig, run_info: dict, overwrite: bool = False) -> SimpleNamespace:
    """script.main's trainer: run (or continue) the search in the config's run directory; one writer at a
    time, never another run's directory (checked as the PPO engine checks it). Returns the run (run_dir,
    archive)."""
    if args.push_to_hub:
        raise UserError("--push-to-hub: qd_zyn.py trains no policy; its archive is in the run directory")
    tc, gen = config.train, config.method.gen_kwargs
    # the settings the search reads, from the config (where the flags put them)
    args = dataclasses.replace(args, total_steps=tc.total_steps, batch_size=tc.batch_size, seed=tc.seed,
                               tracker=tc.tracker, policy=config.model.model_path,
                               max_new_tokens=gen["max_new_tokens"], temperature=gen.get("temperature", 1.0),
                               top_p=gen.get("top_p", 1.0), project_name=tc.project_name)
    record = {"config": config.to_dict(), "run": run_info}
    run_dir = Path(tc.logging_dir)
    with runio.RunLock(run_dir):
        runio.check_run_dir(run_dir, record, resume=True, overwrite=overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        runio.write_json_atomic(run_dir / runio.RUN_RECORD, {**record, "environment": runio.environment()})
        runio.write_text_atomic(run_dir / "config.yaml", str(config))
        archive = _search(args, run_dir, record, prompts)
    print(runio.summarize(run_dir), flush=True)
    return SimpleNamespace(run_dir=run_dir, archive=archive)


def _search(args: Args, run_dir: Path, record: dict, seeds: list[str]) -> dict:
    state_path, archive_path = run_dir / "state.json", run_dir / "archive.jsonl"
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    model, tokenizer = load_policy(args.policy)
    judges = make_judges(args, model, tokenizer) if args.judge == args.policy else make_judges(args)
    num_axes, num_cells = len(args.descriptors), args.bins ** len(args.descriptors)
    if state is not None:  # what was logged after the last finished iteration is done again
        runio.keep_metrics_until(run_dir / "metrics.jsonl", state["iteration"])
    elif (run_dir / "metrics.jsonl").exists():
        runio.keep_metrics_until(run_dir / "metrics.jsonl", -1)  # a start that died before iteration 0 ended
    tracker = runio.RunLogger(run_dir, args.tracker, record, project=args.project_name)

    def evaluate(texts: list[str], iteration: int) -> list[dict]:
        texts = [t for t in texts if len(t) >= 3]
        if not texts:
            return []
        quality, descriptors = score(judges, texts)
        return [dict(bin=None, text=t, quality=q, descriptors=d, iteration=iteration)
                for t, q, d in zip(texts, quality, descriptors)]

    if state is None:  # iteration 0: the initial population fixes the bin edges
        start = time.time()
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        examples = [random.sample(seeds, args.num_examples) for _ in range(args.init_size)]
        texts = [t for i in range(0, args.init_size, args.batch_size)
                 for t in propose(model, tokenizer, examples[i:i + args.batch_size], args)]
        population = evaluate(texts, 0)
        if not population:
            raise SystemExit("the mutation LM wrote only empty reviews for the initial population")
        edges = [quantile_edges([p["descriptors"][a] for p in population], args.bins) for a in range(num_axes)]
        archive: dict[tuple[int, ...], dict] = {}
        for p in population:
            p["bin"] = list(bin_index(p["descriptors"], edges))
            try_insert(archive, p)
        state = dict(iteration=0, edges=edges, elapsed=time.time() - start)
        runio.write_jsonl_atomic(archive_path, archive.values())
        runio.write_json_atomic(state_path, state)
        tracker.log({**qd_metrics(archive, num_cells), "qd/accepted": len(archive), "time/elapsed": state["elapsed"]},
                    step=0)
    else:
        archive = {tuple(e["bin"]): e for e in runio.read_jsonl(archive_path)}
        print(f"resuming {run_dir} at iteration {state['iteration']} with {len(archive)} elites")
    edges = state["edges"]

    start = time.time() - state["elapsed"]
    for iteration in range(state["iteration"] + 1, args.total_steps + 1):
        random.seed(args.seed * 100_003 + iteration)  # per-iteration seeds: a resumed run continues identically
        torch.manual_seed(args.seed * 100_003 + iteration)
        examples = [few_shot(archive, seeds, args.parents, args.num_examples) for _ in range(args.batch_size)]
        accepted = 0
        for child in evaluate(propose(model, tokenizer, examples, args), iteration):
            child["bin"] = list(bin_index(child["descriptors"], edges))
            accepted += try_insert(archive, child)
        state = dict(iteration=iteration, edges=edges, elapsed=time.time() - start)
        runio.write_jsonl_atomic(archive_path, archive.values())
        runio.write_json_atomic(state_path, state)
        metrics = {**qd_metrics(archive, num_cells), "qd/accepted": accepted, "time/elapsed": state["elapsed"]}
        tracker.log(metrics, step=iteration)
        print(f"iter {iteration}: qd_score {metrics['qd/score']:.3f} coverage {metrics['qd/coverage']:.2f} "
              f"max_quality {metrics['qd/max_quality']:.3f} accepted {accepted}", flush=True)
        if iteration % args.plot_interval == 0:
            plot_archive(archive, edges, args, run_dir / "archive.png")
    plot_archive(archive, edges, args, run_dir / "archive.png")
    tracker.close()
    return archive


def main(argv: list[str] | None = None) -> None:
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__, extra_info=extra_info,
                argv=argv, train=search)


if __name__ == "__main__":
    main()
