"""The model card of a finished run: checkpoints/final/policy/README.md, a Hugging Face card.

It is written inside the final checkpoint's write callback, so that meta.json's checksums cover it. It says
what the policy is (base model, judge, the questions as the judge read them, steps), how it did (first ->
last of every evaluation metric), how to make it again (command, commit) and how to load it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from . import runio


def git_commit(record: dict) -> str:
    """The commit the run started at, as run.json recorded it ("<hash> plus uncommitted changes" when tracked
    files differed), or "unknown"."""
    code = record.get("environment", {}).get("code") or runio.code_version()
    return code.get("commit", "unknown") + (" plus uncommitted changes" if code.get("dirty") else "")


def base_license(name: str) -> str | None:
    """The license of a base model, where it is known here: an embedded model's, or the `license` in the
    card (README.md) of a local folder or of a hub model in the local cache. Never downloads."""
    from zyn_models import EMBEDDED_MODELS

    if name in EMBEDDED_MODELS:
        words = EMBEDDED_MODELS[name].license.split()
        return words[0].lower() if words else None  # "Apache-2.0" -> "apache-2.0", "Gemma Terms ..." -> "gemma"
    readme = Path(name) / "README.md"
    if not readme.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name, "README.md")
            readme = Path(found) if isinstance(found, str) else None
        except Exception:  # not a hub name, or an odd cache: unknown
            return None
    try:
        text = readme.read_text() if readme else ""
        front = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
    except (OSError, IndexError, yaml.YAMLError):
        return None
    value = front.get("license") if isinstance(front, dict) else None
    return value if isinstance(value, str) else None


def first_last(rows: list[dict]) -> tuple[int, int, dict[str, tuple[float, float]]]:
    """Steps of the first and last evaluation, and first -> last of reward/mean and every metrics/* key."""
    evals = [r for r in rows if r.get("reward/mean") is not None]
    if not evals:
        return 0, 0, {}
    out = {}
    for k in ["reward/mean"] + sorted({k for r in evals for k in r if k.startswith("metrics/")}):
        values = [r[k] for r in evals if r.get(k) is not None]
        if values:
            out[k] = (float(values[0]), float(values[-1]))
    return evals[0]["step"], evals[-1]["step"], out


def _questions(judge: dict) -> list[str]:
    """The judge and its questions as the judge read them (template, answer words, target, transform)."""
    options = judge.get("options", {})
    yes, no = list(options.get("yes_words") or ["Yes"]), list(options.get("no_words") or ["No"])
    lines = [f"- Judge: `{judge.get('model')}`, answer words {yes} (yes) / {no} (no), transform "
             f"`{options.get('transform', 'centered')}`" + (f", calibrated ({options['calibrate']})"
                                                           if options.get("calibrate") else "")
             + "; the reward is transform(P(target answer)), averaged over the rewarded questions by weight."]
    for kind, questions in (("Rewarded question", judge.get("questions", [])),
                            ("Logged question (not rewarded)", judge.get("logged_questions", []))):
        for q in questions:
            word = (yes if q.get("target") == "yes" else no)[0]
            shots = f", {len(q['examples'])} few-shot examples" if q.get("examples") else ""
            lines.append(f"- {kind} `{q.get('name')}`: {q.get('question')!r}, target answer **{q.get('target')}** "
                         f"({word!r}), weight {q.get('weight')}{shots}; template {q.get('template')!r}")
    return lines


def model_card(record: dict, rows: list[dict], step: int, commit: str, example: str = "The movie was") -> str:
    """The card's text from run.json's record, the metrics.jsonl rows, the step, the commit and an example
    prompt for the loading snippet."""
    run, config = record.get("run", {}), record.get("config", {})
    policy = run.get("policy") or config.get("model", {}).get("model_path", "unknown")
    hub_name = re.fullmatch(r"[\w.-]+/[\w.-]+", str(policy)) and not Path(str(policy)).exists()
    front = {**({"base_model": policy} if hub_name else {}), "library_name": "transformers",
             "pipeline_tag": "text-generation", "tags": ["zyn", "rlaif", "ppo"]}
    license_ = base_license(str(policy))
    if license_:
        front["license"] = license_
    judge = run.get("judge")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {run.get('experiment', 'zyn_ppo')}: a policy trained with PPO against a yes/no judge (ZYN)", "",
             "RLAIF with a zero-shot yes/no reward model: a judge language model is asked a yes/no question about "
             "each generated text, and its probability of the rewarded answer is the PPO reward "
             "([ZYN, arXiv 2308.06385](https://arxiv.org/abs/2308.06385)).", "",
             f"- Base model (policy): `{policy}`"]
    if run.get("reward") == "external":
        lines.append(f"- Reward: the oracle ceiling: trained on the external check ({run.get('external')}) itself, "
                     "as (score - 0.5) * 10; the judge below was only logged")
    if isinstance(judge, dict):
        lines += _questions(judge)
        for guard in judge.get("guards", []):
            lines.append(f"- Guard question (rewarded in the Eq. 4 mean), asked its own way: {guard.get('question')!r} "
                         f"answered {guard.get('answers')} in {guard.get('template')!r}, standing for "
                         f"{guard.get('asks') or guard.get('question')!r}")
        for spec in judge.get("logged_specs", []):
            lines.append(f"- Logged question (not rewarded), asked its own way: {spec.get('question')!r} answered "
                         f"{spec.get('answers')} in {spec.get('template')!r}")
    else:
        lines.append(f"- Reward: {judge or 'a reward_fn given in Python (not recorded)'}")
    lines += [f"- Steps: {step} PPO optimizer steps (batch size {config.get('train', {}).get('batch_size')}, "
              f"{config.get('method', {}).get('num_rollouts')} rollouts per collection)"]
    if run.get("prompts"):
        lines.append(f"- Prompts: {run['prompts']}")
    first, last, metrics = first_last(rows)
    if metrics:
        lines += ["", "## Evaluation", "", "Mean over the evaluation prompts, first -> last evaluation "
                  "(metrics/prob_*: the judge's P(target answer); metrics/external_*: a check outside the judge).",
                  "", f"| metric | step {first} | step {last} |", "|---|---|---|"]
        lines += [f"| {k} | {runio.significant(a, 4)} | {runio.significant(b, 4)} |" for k, (a, b) in metrics.items()]
    command = record.get("environment", {}).get("command") or []
    shown = shlex.join(command)
    if command and command[0].endswith(".py"):
        shown = "python " + shown
    lines += ["", "## Reproduce", "", "```bash", shown or "(not recorded)", "```", "",
              f"Commit: `{commit}`. The run's directory also holds run.json (the whole run), config.yaml, "
              "metrics.jsonl and the evaluation samples.", "",
              "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline", "",
              'path = "."  # this folder, or the Hub repo it was pushed to',
              "model = AutoModelForCausalLM.from_pretrained(path)",
              "tokenizer = AutoTokenizer.from_pretrained(path)",
              'generate = pipeline("text-generation", model=model, tokenizer=tokenizer)',
              f"print(generate({example!r}, max_new_tokens=40, do_sample=True)[0][\"generated_text\"])",
              "```", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, run_dir: Path, step: int) -> Path:
    """folder/README.md from run_dir's run.json, metrics.jsonl and the first prompt of its last evaluation's
    samples (call it before the checkpoint's checksums are taken)."""
    run_dir = Path(run_dir)
    record_path = run_dir / runio.RUN_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    rows = runio.read_metrics(run_dir / "metrics.jsonl")
    samples = run_dir / "samples" / f"eval_{first_last(rows)[1]}.jsonl"
    lines = runio.read_jsonl(samples)
    example = lines[0]["prompt"] if lines else "The movie was"
    path = Path(folder) / "README.md"
    path.write_text(model_card(record, rows, step, git_commit(record), example))
    return path
