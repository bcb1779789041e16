"""The experiments' prompts: reading prompt files, and the movie-review openers that the sentiment, D5 and
robust experiments share (the first 4 words of every IMDB review, or the cpu preset's file)."""

from __future__ import annotations

import os
from pathlib import Path

from .config import UserError

ROOT = Path(__file__).resolve().parents[1]
MOVIE_REVIEW_OPENERS = "data/movie_review_openers.txt"


def _find(path: str) -> Path:
    """A path relative to the working directory, else to the project folder."""
    p = Path(path)
    return p if p.exists() or p.is_absolute() else ROOT / p


def read_prompt_lines(path: str | os.PathLike, num_eval: int = 0) -> list[str]:
    """The prompts of a text file: its non-empty lines, stripped, as str.splitlines() splits them (a byte
    order mark is dropped). A UserError names the file when it is missing, is not UTF-8 (the line of the bad
    byte), or holds no more than `num_eval` prompts (the last num_eval are held out for evaluation, and
    training needs at least one more)."""
    path = _find(str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"prompt file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise UserError(f"prompt file {path} is a folder; give a text file, one prompt per line") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise UserError(f"prompt file {path}:{line} is not UTF-8 text (byte 0x{data[error.start]:02x} at column "
                        f"{column}); save the file as UTF-8") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= num_eval:
        raise UserError(f"prompt file {path} has {len(lines)} prompts (non-empty lines) and needs at least "
                        f"{num_eval + 1}: the last {num_eval} are held out for evaluation and training needs at "
                        "least one more; add prompts")
    return lines


def movie_review_openers(preset: str, num_eval: int) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts of the movie-review experiments: the first 4 words of each IMDB review
    (train + test; paper preset), or the lines of data/movie_review_openers.txt (cpu preset); the last
    num_eval are held out for evaluation."""
    if preset == "paper":
        from datasets import load_dataset

        reviews = load_dataset("imdb", split="train+test")["text"]
        prompts = [" ".join(review.split()[:4]) for review in reviews]
    else:
        prompts = read_prompt_lines(MOVIE_REVIEW_OPENERS, num_eval)
    return prompts[:-num_eval], prompts[-num_eval:]
