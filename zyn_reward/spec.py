"""JudgeSpec: how a judge is asked one question (template, answer words, reward transform, negation,
calibration), as the experiment scripts take it and as `python -m zyn_reward tune` writes it (JSON)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Sequence

from .errors import UserError, one_line
from .evaluate import read_text_file
from .recipe import TEMPLATES, TRANSFORMS, YES_NO, YesNoQuestion, parse_answer, question_name


@dataclass
class JudgeSpec:
    """How a judge is asked one question: the question and its way of asking travel together.

    The paper's recipe is the default: a yes/no question in a Flan-style template, answered Yes or No, the
    reward (P - 0.5) * 10 (Eq. 3). A small judge may answer the same question better another way, e.g.
    gemma-3-270m completing "Review: <text>\nSentiment:" with "positive" or "negative"; such a phrasing
    records in `asks` the plain question it stands for (its metrics are named after it), and in `model`
    the judge it was measured on. `python -m zyn_reward tune` measures phrasings and writes the winner as a
    JSON file that the experiment scripts read with --judge-spec.

        JudgeSpec("Is this movie review positive?")                               # the paper's way
        JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                  transform="logodds", asks="Is this movie review positive?", model="gemma-3-270m")
    """

    question: str
    template: str = "flan_review"
    answers: tuple[str, str] = ("Yes", "No")
    """the rewarded answer word first (Eq. 3 with these words for Yes and No)"""
    transform: str = "centered"
    target: str = "yes"
    """which answer earns the reward: yes (the first word) or no (the second)"""
    negation: str = ""
    """a negated question, averaged with the question for the opposite answer (Eq. 4); "" for none"""
    calibrate: bool = False
    chat_template: bool = False
    asks: str = ""
    """the plain yes/no question this phrasing stands for ("" : the question itself)"""
    model: str = ""
    """the judge this phrasing was measured on ("": any)"""
    weight: float = 1.0
    """the question's weight in the Eq. (4) mean, beside other questions (a question and its negation share it)"""

    def __post_init__(self):
        self.template = TEMPLATES.get(self.template, self.template)
        self.answers = tuple(self.answers) if isinstance(self.answers, (list, tuple)) else self.answers

    def check(self) -> "JudgeSpec":
        """Raise a UserError (one line) when the parts do not fit together; the scripts check their presets
        when they run, so that a copied script with a mismatched edit stops with one line, not a traceback."""
        if not isinstance(self.answers, tuple) or len(self.answers) != 2:
            raise UserError(f"answers must be two words, the rewarded one first, got {self.answers!r}")
        if self.transform not in TRANSFORMS:
            raise UserError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        parse_answer(self.target, "target")
        yes_no = [a.strip().lower() for a in self.answers] == list(YES_NO)
        for question in filter(None, (self.question, self.negation)):
            if question.rstrip().endswith("?") and not yes_no:
                raise UserError(
                    f"the question {question!r} asks yes or no, but the answer words are {self.answers[0]!r}/"
                    f"{self.answers[1]!r}: answer it Yes/No (answers=('Yes', 'No')), or ask with a label prompt "
                    "such as 'Sentiment:' (python -m zyn_reward tune measures which works)")
        return self

    @property
    def stands_for(self) -> str:
        return self.asks or self.question

    def questions(self, examples: Sequence[tuple[str, str]] = ()) -> list[YesNoQuestion]:
        """The YesNoQuestions a ZeroShotRewardModel asks (the question, and its negation when there is one)."""
        self.check()
        name = question_name(self.stands_for)
        target = parse_answer(self.target, "target")
        if self.negation:
            return YesNoQuestion.pair(self.question, self.negation, target=target, template=self.template,
                                      weight=self.weight, name=name, examples=examples)
        return [YesNoQuestion(self.question, target=target, template=self.template, weight=self.weight, name=name,
                              examples=examples)]

    def reward_options(self) -> dict:
        """The ZeroShotRewardModel keyword arguments of this way of asking."""
        return dict(yes_words=(self.answers[0],), no_words=(self.answers[1],), transform=self.transform,
                    calibrate=self.calibrate, chat_template=self.chat_template)

    def describe(self) -> str:
        """One line: how the question is asked."""
        how = (f"{self.question!r} in {self.template!r}, answered {self.answers[0]!r}/{self.answers[1]!r} "
               f"(target {self.target}), reward {self.transform}")
        extras = [f"negation {self.negation!r}" if self.negation else "", "calibrated" if self.calibrate else "",
                  "chat template" if self.chat_template else ""]
        return how + "".join(f", {e}" for e in extras if e)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str) -> "JudgeSpec":
        """A spec written by `python -m zyn_reward tune --out FILE` (its "spec" entry) or a bare spec object."""
        try:
            data = json.loads(read_text_file(path, "judge spec"))
        except ValueError as error:
            raise UserError(f"--judge-spec {path}: {one_line(error)}") from None
        except OSError as error:
            raise UserError(f"--judge-spec: {one_line(error)}") from None
        data = data.get("spec", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise UserError(f"--judge-spec {path}: expected a JSON object with the fields of JudgeSpec")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"--judge-spec {path}: unknown field(s) {unknown}")
        try:
            return cls(**data).check()
        except TypeError as error:
            raise UserError(f"--judge-spec {path}: {error}") from None

