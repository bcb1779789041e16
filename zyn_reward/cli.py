"""The command line, `python -m zyn_reward score|eval|tune`: try a yes/no question on texts, measure it on
labelled texts, or choose how to ask it (tune.py). The default judge is the embedded offline model; bad
input is one `error: ...` line on stderr and exit status 2, `--debug` or ZYN_DEBUG=1 shows the traceback.

    python -m zyn_reward score --question "Is this movie review positive?" reviews.txt
    python -m zyn_reward eval --question "Is this movie review positive?" --labeled reviews.csv
    python -m zyn_reward tune --question "Is this movie review positive?" --labeled reviews.csv \
        --out spec.json
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from zyn_models import TRUE_VALUES

from . import tune
from .errors import ModelLoadError, UserError, one_line
from .evaluate import read_labeled, read_text_file, report, split_lines
from .model import ZeroShotRewardModel
from .recipe import TEMPLATES, YesNoQuestion


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one UserError line, not the usage block (zyn_serve uses it too)."""

    def error(self, message):  # one line, not the usage block
        raise UserError(f"{message} (see: {self.prog} --help)")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def answer_words(text: str) -> list[str]:
    """An argparse type: comma-separated answer words (--yes-words Yes,yes)."""
    words = [w for w in text.split(",") if w.strip()]
    if not words:
        raise argparse.ArgumentTypeError(f"{text!r} names no word; give comma-separated words such as "
                                         "Yes,yes")
    return words


def build_parser() -> argparse.ArgumentParser:
    """The parser of score, eval and tune (tune's flags live in tune.py)."""
    parser = OneLineParser(prog="python -m zyn_reward", description="Try a yes/no reward question.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also ZYN_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    score = commands.add_parser("score", help="print P(target answer) for each line of a file")
    score.add_argument("file", help="UTF-8 text, one text per line (split on newlines only); - reads stdin")
    evaluate = commands.add_parser("eval", help="AUROC, accuracy and calibration error on labelled texts")
    evaluate.add_argument("--labeled", required=True, help="CSV file with columns text,label (1/0)")
    evaluate.add_argument("--text-column", default="text", help="name of the text column")
    evaluate.add_argument("--label-column", default="label", help="name of the label column")
    for sub in (score, evaluate):
        sub.add_argument("--question", required=True, help='e.g. "Is this movie review positive?"')
        sub.add_argument("--negation", default=None,
                         help='the question\'s negation, e.g. "Is this movie review negative?": rewards '
                              "P(yes | question) and P(no | negation) half each")
        sub.add_argument("--examples", default=None,
                         help="few-shot examples: a CSV file with columns text,label (label = the answer "
                              "to --question)")
        sub.add_argument("--model", default="smollm2-135m-instruct", help="hub name, folder or embedded name")
        sub.add_argument("--template", default="flan_review",
                         help=f"one of {sorted(TEMPLATES)} or a string with {{text}} and {{question}}")
        sub.add_argument("--target", default="yes", choices=["yes", "no"], help="the rewarded answer")
        sub.add_argument("--yes-words", type=answer_words, default=["Yes"], help="comma-separated, e.g. Yes,yes")
        sub.add_argument("--no-words", type=answer_words, default=["No"], help="comma-separated, e.g. No,no")
        sub.add_argument("--batch-size", type=positive_int, default=None,
                         help="texts per forward pass (default: sized by a token budget per device)")
        sub.add_argument("--token-budget", type=positive_int, default=None,
                         help="tokens per forward pass (default: 1024 on a CPU, 16384 on a GPU)")
        sub.add_argument("--max-length", type=positive_int, default=None, help="prompt token limit")
        sub.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"],
                         help="auto: bfloat16 where the device has native bf16, else the weights' own")
        sub.add_argument("--device", default=None)
        sub.add_argument("--no-chat-template", action="store_true", help="plain prompts (decoder-only)")
        sub.add_argument("--calibrate", action="store_true", help="contextual calibration")
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks (also ZYN_DEBUG=1)")
    tune.add_parser(commands).add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                               help="show tracebacks (also ZYN_DEBUG=1)")
    return parser


def run(args) -> None:
    """One command (score, eval or tune) from its parsed arguments."""
    if args.command == "tune":
        tune.run(args)
        return
    template = args.template.replace("\\n", "\n")
    try:
        examples = read_labeled(args.examples) if args.examples else ([], [])
    except (OSError, ValueError) as error:
        raise UserError(f"--examples: {one_line(error)}") from error
    examples = [(t, "yes" if y else "no") for t, y in zip(*examples)]
    try:
        if args.negation:
            questions = YesNoQuestion.pair(args.question, args.negation, target=args.target,
                                           template=template, examples=examples)
        else:
            questions = YesNoQuestion(args.question, target=args.target, template=template, examples=examples)
    except (ValueError, TypeError) as error:
        message = one_line(error)
        if "template" in message:
            message += ("; --template needs {text} and {question}, e.g. "
                        "'Review: {text}\\n\\n{question} Response:'")
        raise UserError(message) from error
    try:
        if args.command == "score":
            texts = split_lines(read_text_file(args.file, "texts file"))
            if not texts:
                raise UserError(f"no texts: {'standard input' if args.file == '-' else args.file} is empty; "
                                 "give one text per line")
        else:
            texts, labels = read_labeled(args.labeled, args.text_column, args.label_column)
            if not texts:
                raise UserError(f"{args.labeled}: no examples (a header but no rows); add rows text,label")
    except (OSError, ValueError) as error:
        raise UserError(one_line(error)) from error
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # stderr holds errors only
    transformers_logging.disable_progress_bar()  # "Loading weights" bars
    try:
        from huggingface_hub.utils import enable_progress_bars
        enable_progress_bars()  # but a download still shows its progress
    except ImportError:
        pass
    try:
        rm = ZeroShotRewardModel(
            args.model, questions=questions, yes_words=args.yes_words, no_words=args.no_words,
            batch_size=args.batch_size, token_budget=args.token_budget, device=args.device, dtype=args.dtype,
            chat_template=not args.no_chat_template, calibrate=args.calibrate, max_length=args.max_length,
        )
        probs = rm.probabilities(texts)
    except (ModelLoadError, ValueError) as error:
        raise UserError(one_line(error)) from error
    if args.command == "score":
        for p in probs:
            print(f"{p:.6f}")
        return
    for line in report(probs, labels):
        print(line)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line. A user error prints one line `error: <what, where, how to fix>` on stderr and
    exits with status 2; --debug (or ZYN_DEBUG=1) raises it with its traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ZYN_DEBUG", "").strip().lower() in TRUE_VALUES
    try:
        run(build_parser().parse_args(argv))
    except UserError as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # e.g. `score ... | head`: the reader left, nothing to report
        sys.stderr.close()
        sys.exit(0)
