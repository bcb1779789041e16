"""tools/sft_reviews.py: the review LM that PPO can start from, on a tiny random model with stand-in reviews."""

import json

import pytest
import torch

import zyn_ppo
from tools import sft_reviews

REVIEWS = [(f"this film number {i} was {'good' if i % 2 else 'bad'} and the acting was fine", i % 2) for i in range(40)]


def test_batches_mask_padding_and_cover_each_text_once(tokenizer):
    texts = ["a b c d e f", "a", "a b", "a b c", "a b c d", "x y"]
    seen = []
    for enc, labels in sft_reviews.batches(texts, tokenizer, max_tokens=4, batch_size=2, seed=3):
        assert enc.input_ids.shape[1] <= 4
        assert torch.equal(labels == -100, enc.attention_mask == 0)  # padding never counts in the loss
        assert torch.equal(labels[enc.attention_mask == 1], enc.input_ids[enc.attention_mask == 1])
        seen += tokenizer.batch_decode(enc.input_ids, skip_special_tokens=True)
    assert len(seen) == len(texts)


def test_sft_writes_a_policy_folder_and_never_overwrites(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(sft_reviews, "movie_reviews", lambda data_dir, source: REVIEWS)
    out = tmp_path / "review_lm"
    sft_reviews.main(["--out", str(out), "--policy", tiny_llama_dir, "--reviews", "8", "--batch-size", "4",
                      "--max-tokens", "8", "--lr", "1e-3"])
    record = json.loads((out / "sft.json").read_text())
    assert record["steps"] == 2 and record["base"] == tiny_llama_dir and "8 IMDB reviews" in record["data"]
    before = zyn_ppo.load_causal_lm(tiny_llama_dir).state_dict()
    after = zyn_ppo.load_causal_lm(str(out)).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    zyn_ppo.load_tokenizer(str(out))  # a folder any script takes as --policy
    with pytest.raises(SystemExit, match="exists and is not empty"):
        sft_reviews.main(["--out", str(out), "--policy", tiny_llama_dir])
