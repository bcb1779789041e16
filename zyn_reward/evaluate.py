"""Evaluating a question on labelled texts: AUROC, expected calibration error, and reading the files they
come from (a labelled CSV, a UTF-8 text file of one text per line) with errors that name file and line."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from typing import Sequence

from .errors import UserError


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count one half.
    NaN when the labels hold one class only (the area is undefined)."""
    pairs = sorted(zip(scores, labels))
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(pairs):  # average ranks over ties
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = sum(r for r, (_, y) in zip(ranks, pairs) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """Mean |fraction of positives - mean probability| over equal-width bins, weighted by bin size."""
    total, ece = len(probs), 0.0
    for b in range(bins):
        members = [(p, y) for p, y in zip(probs, labels) if min(int(p * bins), bins - 1) == b]
        if members:
            conf = sum(p for p, _ in members) / len(members)
            acc = sum(y for _, y in members) / len(members)
            ece += len(members) / total * abs(acc - conf)
    return ece


_LABELS = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0, "pos": 1, "neg": 0,
           "positive": 1, "negative": 0}


def parse_label(value) -> int | None:
    """1/0 from 1/0, 1.0/0.0, yes/no, true/false, pos/neg, positive/negative (any case); else None."""
    text = str(value if value is not None else "").strip().lower()
    if text in _LABELS:
        return _LABELS[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def read_text_file(path: str, what: str) -> str:
    """A UTF-8 text file (a byte order mark is dropped), or a ValueError/FileNotFoundError that says
    what is wrong with it; "-" reads standard input."""
    if path == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        where = "standard input"
    else:
        where = path
        if os.path.isdir(path):
            raise IsADirectoryError(f"{what} {path!r} is a folder; give a file")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} {path!r} does not exist; check the path") from None
    if b"\x00" in data[:65536]:
        raise UserError(f"{what} {where} looks binary (it holds NUL bytes); give a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{what} {where} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                         f"{error.start}); save it as UTF-8") from None


def split_lines(text: str) -> list[str]:
    """One text per line: split on newlines only ("\\n", "\\r\\n"), never on form feeds, U+2028, U+0085
    or other characters that str.splitlines() also breaks at; a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_labeled(path: str, text_column: str = "text",
                 label_column: str = "label") -> tuple[list[str], list[int]]:
    """A CSV file with a header and columns text,label (label 1/0, 1.0/0.0, yes/no, true/false,
    positive/negative; the column names match without regard to case or surrounding spaces; a byte order
    mark is fine). Errors name the file and line."""
    content = read_text_file(path, "labelled CSV")
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise UserError(f"{path}:1: not a valid CSV header ({error})") from None
    if not header:
        raise UserError(f"{path}: empty file; it needs a header line {text_column},{label_column} and one "
                         "row per example")
    names = [h.strip().lower() for h in header]
    missing = [c for c in (text_column, label_column) if c.strip().lower() not in names]
    if missing:
        raise UserError(f"{path}:1: no column {' or '.join(repr(m) for m in missing)} in the header "
                         f"{header}; name the columns {text_column},{label_column} (or pass "
                         "--text-column/--label-column)")
    ti, li = names.index(text_column.strip().lower()), names.index(label_column.strip().lower())
    texts, labels = [], []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            raise UserError(f"{path}:{start}: not valid CSV ({error})") from None
        if row is None:
            break
        if not row:  # a blank line
            continue
        if len(row) <= max(ti, li):
            raise UserError(f"{path}:{start}: {len(row)} field(s), the header has {len(header)}; "
                             f"each row needs a {text_column} and a {label_column}")
        label = parse_label(row[li])
        if label is None:
            raise UserError(f"{path}:{start}: unknown label {row[li]!r} in column {label_column!r}; "
                             "use 1/0, yes/no, true/false or positive/negative")
        texts.append(row[ti])
        labels.append(label)
    return texts, labels



def report(probs: Sequence[float], labels: Sequence[int]) -> list[str]:
    """The lines `python -m zyn_reward eval` prints: AUROC, accuracy at P >= 0.5, ECE and the mean P."""
    n_pos = sum(labels)
    accuracy = sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / len(labels)
    area = auroc(probs, labels)
    lines = [f"examples   {len(labels)} ({n_pos} positive)"]
    if math.isnan(area):
        kind = "positive" if n_pos else "negative"
        lines.append(f"AUROC      undefined: one class (all {len(labels)} examples are {kind})")
    else:
        lines.append(f"AUROC      {area:.4f}")
    lines.append(f"accuracy   {accuracy:.4f} (P >= 0.5)")
    lines.append(f"ECE        {expected_calibration_error(probs, labels):.4f} (10 bins)")
    lines.append(f"mean P     {sum(probs) / len(probs):.4f}")
    return lines
