"""The zyn_reward command line (python -m zyn_reward): every user error is one `error: ...` line on stderr, exit status 2."""

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny_models
import zyn_reward
from test_reward import word_level_tokenizer
from zyn_reward import YesNoQuestion, ZeroShotRewardModel, auroc, main

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Is this movie review positive?"


def fails(capsys, *argv) -> str:
    """Run main() in this process; expect exit status 2 and one line 'error: ...' on stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def succeeds(capsys, *argv) -> str:
    main(list(argv))
    out, err = capsys.readouterr()
    assert "error" not in err
    return out


def labeled(path: Path, rows, header=("text", "label"), bom=False) -> str:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: an empty Hugging Face cache and HF_HUB_OFFLINE=1."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ZYN_DEBUG", raising=False)


def test_missing_files(capsys, tmp_path, offline):
    line = fails(capsys, "score", "--question", QUESTION, str(tmp_path / "nope.txt"))
    assert "nope.txt" in line and "does not exist" in line and "check the path" in line
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled", str(tmp_path / "nope.csv"))
    assert "nope.csv" in line and "does not exist" in line
    line = fails(capsys, "score", "--question", QUESTION, str(tmp_path))
    assert "is a folder" in line
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled", labeled(tmp_path / "a.csv", [("x", 1)]),
                 "--examples", str(tmp_path / "shots.csv"))
    assert line.startswith("error: --examples:") and "shots.csv" in line


def test_binary_and_undecodable_files(capsys, tmp_path, offline):
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 4)
    line = fails(capsys, "score", "--question", QUESTION, str(tmp_path / "model.bin"))
    assert "looks binary" in line and "UTF-8" in line
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    line = fails(capsys, "score", "--question", QUESTION, str(tmp_path / "latin1.txt"))
    assert "not UTF-8 text (byte 0xe9 at offset 3)" in line and "save it as UTF-8" in line
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled", str(tmp_path / "latin1.csv"))
    assert "latin1.csv" in line and "not UTF-8" in line


def test_csv_columns_labels_and_emptiness(capsys, tmp_path, offline):
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled",
                 labeled(tmp_path / "a.csv", [("good", 1)], header=("review", "label")))
    assert "a.csv:1: no column 'text'" in line and "--text-column" in line
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled",
                 labeled(tmp_path / "b.csv", [("good", 1)], header=("text", "stars")))
    assert "no column 'label'" in line
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled",
                 labeled(tmp_path / "c.csv", [("good", 1), ("so-so", 2), ("bad", 0)]))
    assert "c.csv:3: unknown label '2'" in line and "use 1/0, yes/no" in line
    line = fails(capsys, "eval", "--question", QUESTION, "--labeled", labeled(tmp_path / "d.csv", []))
    assert "no examples" in line and "d.csv" in line
    (tmp_path / "e.csv").write_text("")
    assert "empty file" in fails(capsys, "eval", "--question", QUESTION, "--labeled", str(tmp_path / "e.csv"))
    (tmp_path / "empty.txt").write_text("")
    assert "no texts" in fails(capsys, "score", "--question", QUESTION, str(tmp_path / "empty.txt"))


def test_argument_errors(capsys, tmp_path, offline):
    texts = tmp_path / "t.txt"
    texts.write_text("a film\n")
    for value in ("0", "-3", "many"):
        line = fails(capsys, "score", "--question", QUESTION, "--batch-size", value, str(texts))
        assert "--batch-size" in line and "--help" in line
    assert "--max-length" in fails(capsys, "score", "--question", QUESTION, "--max-length", "0", str(texts))
    assert "--token-budget" in fails(capsys, "score", "--question", QUESTION, "--token-budget", "-1",
                                     str(texts))
    line = fails(capsys, "score", "--question", QUESTION, "--template", "Review: {question}", str(texts))
    assert "template must contain {text}" in line and "--template needs {text} and {question}" in line
    assert "non-empty" in fails(capsys, "score", "--question", "  ", str(texts))
    assert "--dtype" in fails(capsys, "score", "--question", QUESTION, "--dtype", "int8", str(texts))
    assert "required" in fails(capsys, "score", str(texts))
    assert "two different" in fails(capsys, "score", "--question", QUESTION, "--negation", QUESTION,
                                    str(texts))


def test_wrong_model_name_fails_in_seconds_naming_what_was_tried(capsys, tmp_path, offline, monkeypatch):
    texts = tmp_path / "t.txt"
    texts.write_text("a film\n")
    start = time.perf_counter()
    line = fails(capsys, "score", "--question", QUESTION, "--model", "smollm2-135m-instruc", str(texts))
    assert "did you mean 'smollm2-135m-instruct'" in line and "HF_HUB_OFFLINE" in line
    line = fails(capsys, "score", "--question", QUESTION, "--model", "HuggingFaceTB/SmolLM2-135M-Instrukt",
                 str(texts))
    embedded = ", ".join(sorted(zyn_reward.EMBEDDED_MODELS))
    assert f"not an embedded model name ({embedded})" in line and "not in the Hugging Face cache" in line
    line = fails(capsys, "score", "--question", QUESTION, "--model", str(tmp_path / "judges" / "mine"),
                 str(texts))
    assert "no such local folder" in line and "Repo id" not in line
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refused at once: an unreachable hub
    line = fails(capsys, "score", "--question", QUESTION, "--model", "no-such-org/judge", str(texts))
    assert "the hub is unreachable" in line and "no-such-org/judge" in line
    assert time.perf_counter() - start < 15
    assert "torch sees no CUDA GPU" in fails(capsys, "score", "--question", QUESTION, "--device", "cuda:0",
                                             str(texts)) or torch.cuda.is_available()
    assert "not a torch device" in fails(capsys, "score", "--question", QUESTION, "--device", "gpu0",
                                         str(texts))


def test_unknown_yes_word_is_named(capsys, tmp_path, tiny_llama_dir, offline):
    texts = tmp_path / "t.txt"
    texts.write_text("a film\n")
    line = fails(capsys, "score", "--question", QUESTION, "--model", tiny_llama_dir, "--yes-words",
                 "Yes,Jawohl", str(texts))
    assert "yes_words: 'Jawohl' is not a single token" in line
    tok = word_level_tokenizer()  # a vocabulary with an unknown token, as SentencePiece judges have
    folder = tiny_models.save_tiny(tiny_models.tiny_llama(tok), tok, tmp_path / "wordlevel")
    line = fails(capsys, "score", "--question", QUESTION, "--model", folder, "--no-words", "No,Nein",
                 str(texts))
    assert ("no_words: 'Nein' is not in this tokenizer's vocabulary (it becomes the unknown token '<unk>')"
            in line)


def test_score_splits_on_newlines_only(capsys, tmp_path, tiny_llama_dir, offline, monkeypatch):
    lines = ["one\x0cpage break inside", "two\u2028line separator inside", "three\x85next line inside",
             "four"]
    (tmp_path / "t.txt").write_bytes(("\ufeff" + "\r\n".join(lines) + "\n").encode())
    out = succeeds(capsys, "score", "--question", QUESTION, "--model", tiny_llama_dir,
                   str(tmp_path / "t.txt"))
    want = ZeroShotRewardModel(tiny_llama_dir, QUESTION).probabilities(lines)  # the BOM is not part of line 1
    assert [float(x) for x in out.split()] == pytest.approx(want, abs=1e-5)
    data = (tmp_path / "t.txt").read_bytes()
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="latin-1")  # its bytes are read, not its text
    monkeypatch.setattr(sys, "stdin", stdin)
    assert succeeds(capsys, "score", "--question", QUESTION, "--model", tiny_llama_dir, "-") == out


def test_eval_accepts_bom_and_float_labels(capsys, tmp_path, tiny_llama_dir, offline):
    rows = [("I loved this film.", "1.0"), ("A boring movie.", "0.0"), ("ok", "true"),
            ("Great music!", "False")]
    out = succeeds(capsys, "eval", "--question", QUESTION, "--model", tiny_llama_dir, "--labeled",
                   labeled(tmp_path / "bom.csv", rows, bom=True))
    p = ZeroShotRewardModel(tiny_llama_dir, QUESTION).probabilities([t for t, _ in rows])
    got = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert got["examples"] == "4 (2 positive)"
    assert float(got["AUROC"]) == pytest.approx(auroc(p, [1, 0, 1, 0]), abs=1e-4)


def test_eval_with_one_class_says_auroc_is_undefined(capsys, tmp_path, tiny_llama_dir, offline):
    out = succeeds(capsys, "eval", "--question", QUESTION, "--model", tiny_llama_dir, "--labeled",
                   labeled(tmp_path / "one.csv", [("good", 1), ("fine", "yes")]))
    assert "AUROC      undefined: one class (all 2 examples are positive)" in out and "nan" not in out
    assert "accuracy" in out


def test_few_shot_and_negation_from_the_command_line(capsys, tmp_path, tiny_llama_dir, offline):
    shots = labeled(tmp_path / "shots.csv", [("I loved it.", 1), ("Awful.", 0)])
    (tmp_path / "t.txt").write_text("A fine film.\nA dull film.\n")
    out = succeeds(capsys, "score", "--question", QUESTION, "--negation", "Is this movie review negative?",
                   "--examples", shots, "--model", tiny_llama_dir, str(tmp_path / "t.txt"))
    questions = YesNoQuestion.pair(QUESTION, "Is this movie review negative?",
                                   examples=[("I loved it.", "yes"), ("Awful.", "no")])
    want = ZeroShotRewardModel(tiny_llama_dir, questions, reuse_prefix=False).probabilities(
        ["A fine film.", "A dull film."])
    assert [float(x) for x in out.split()] == pytest.approx(want, abs=1e-5)


def run(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "ZYN_DEBUG"}
    environment.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "zyn_reward", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env=environment, check=False)


def test_a_real_process_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "reviews.csv")
    out = run("eval", "--question", QUESTION, "--labeled", missing)
    assert out.returncode == 2 and out.stdout == ""
    want = f"error: labelled CSV '{missing}' does not exist; check the path"
    assert out.stderr.strip().splitlines() == [want]
    debug = run("eval", "--question", QUESTION, "--labeled", missing, env={"ZYN_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "does not exist" in debug.stderr


def test_debug_flag_raises_instead(tmp_path, monkeypatch):
    monkeypatch.delenv("ZYN_DEBUG", raising=False)
    missing = str(tmp_path / "reviews.csv")
    for argv in (["eval", "--question", QUESTION, "--labeled", missing, "--debug"],
                 ["--debug", "eval", "--question", QUESTION, "--labeled", missing]):
        with pytest.raises(zyn_reward.UserError, match="does not exist") as info:
            main(argv)
        assert isinstance(info.value.__cause__, FileNotFoundError)
