"""What a finished run hands to others: the model card, --push-to-hub (to a local stand-in of the Hub, never
the network) and TensorBoard's text (the config and each evaluation's samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zyn_ppo
from helpers import PROMPTS, read_metrics, share_of_spaces, toy_config, toy_metrics
from zyn_ppo import runio, script


def tensorboard_texts(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """tag -> [(step, text)] of the text summaries in run_dir/tensorboard, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    return {tag.removesuffix("/text_summary"): [(e.step, e.tensor_proto.string_val[0].decode())
                                                 for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"] if tag.endswith("/text_summary")}


@pytest.fixture(scope="module")
def toy_run(tiny_gpt2_dir, tmp_path_factory):
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    cfg = toy_config(tiny_gpt2_dir, run_dir, **{"train.tracker": "tensorboard"})
    zyn_ppo.train(share_of_spaces, PROMPTS, PROMPTS[:4], toy_metrics, cfg)
    return run_dir


def test_final_checkpoint_has_a_model_card_and_still_verifies(toy_run):
    final = toy_run / "checkpoints" / "final"
    assert runio.verify_checkpoint(final) is None
    assert "policy/README.md" in json.loads((final / "meta.json").read_text())["files"]
    card = (final / "policy" / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "- zyn\n- rlaif\n- ppo" in front
    assert "base_model" not in front  # a local folder is no Hub id
    evals = [r for r in read_metrics(toy_run) if "reward/mean" in r]
    for key in ("reward/mean", "metrics/length"):
        first, last = (runio.significant(float(r[key]), 4) for r in (evals[0], evals[-1]))
        assert f"| {key} | {first} | {last} |" in card
    assert "| metric | step 0 | step 8 |" in card and "- Steps: 8 PPO optimizer steps" in card
    assert "Commit: `" in card and "from_pretrained(path)" in card and 'pipeline("text-generation"' in card


def test_tensorboard_gets_the_config_and_samples_as_text(toy_run):
    texts = tensorboard_texts(toy_run)
    (step, config), = texts["config"]
    assert step == 0 and config.startswith("```json") and '"logging_dir"' in config
    assert [s for s, _ in texts["samples"]] == [0, 4, 8]  # one table per evaluation
    table = texts["samples"][-1][1].splitlines()
    assert table[0] == "| prompt | output | reward | length |" and len(table) == 2 + 4
    rows = [json.loads(line) for line in (toy_run / "samples" / "eval_8.jsonl").read_text().splitlines()]
    assert table[2].startswith(f"| {rows[0]['prompt']} | ")


class FakeHfApi:
    """Records what would go to the Hub, and the files of the uploaded folder at that moment."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("HfApi", token))

    def create_repo(self, repo_id, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, folder_path, files))


@pytest.mark.slow
def test_script_push_to_hub_uploads_the_final_policy(tiny_llama_dir, tiny_gpt2_dir, tmp_path, monkeypatch):
    import huggingface_hub
    import ppo_flan_sentiments as sentiments

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(FakeHfApi, "calls", [])
    for key, value in {"HF_TOKEN": "hf_stand_in", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    torch.set_num_threads(1)
    script.main(sentiments.Args, sentiments.PRESETS, sentiments.load_prompts, sentiments.make_reward,
                sentiments.external_check, argv=[
                    "--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_gpt2_dir, "--total-steps", "2",
                    "--tracker", "none", "--logging-dir", str(run_dir), "--push-to-hub", "me/zyn-test",
                    "--overrides", "method.num_rollouts=4", "method.chunk_size=4", "train.batch_size=2",
                    "method.gen_kwargs.max_new_tokens=4"])
    policy = run_dir / "checkpoints" / "final" / "policy"
    assert FakeHfApi.calls[:2] == [("HfApi", None), ("create_repo", "me/zyn-test", True)]
    (_, repo, folder, files), = FakeHfApi.calls[2:]
    assert repo == "me/zyn-test" and Path(folder) == policy
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    card = (policy / "README.md").read_text()
    assert "# ppo_flan_sentiments: a policy trained with PPO" in card
    assert "Rewarded question `is_this_movie_review_positive`: 'Sentiment:', target answer **yes** ('positive')" in card
    assert "answer words ['positive'] (yes) / ['negative'] (no), transform `logodds`" in card
    assert "template 'Review: {text}\\n{question}'" in card and "| metrics/prob_positive |" in card


def test_push_to_hub_needs_a_repo_id_and_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    with pytest.raises(zyn_ppo.UserError, match="not a Hub repo id"):
        script.check_push("me/two/slashes")
    with pytest.raises(zyn_ppo.UserError, match="no Hugging Face token; set HF_TOKEN"):
        script.check_push("me/zyn")
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
    script.check_push("me/zyn")


def test_card_front_matter_names_a_hub_base_model_and_a_known_license():
    from zyn_ppo.card import model_card

    def front(policy):
        return model_card({"run": {"policy": policy}, "config": {}}, [], 0, "unknown").split("---")[1]

    assert "base_model: lvwerra/gpt2-imdb" in front("lvwerra/gpt2-imdb")
    embedded = front("smollm2-135m-instruct")  # no Hub id here, but its license is known
    assert "base_model" not in embedded and "license: apache-2.0" in embedded


def test_a_failed_upload_is_one_line_naming_the_folder(toy_run, monkeypatch):
    import huggingface_hub

    class RefusingHfApi(FakeHfApi):
        def upload_folder(self, repo_id, folder_path, **kwargs):
            raise OSError("401 Client Error: Unauthorized\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", RefusingHfApi)
    trainer = zyn_ppo.PPOTrainer.__new__(zyn_ppo.PPOTrainer)  # only what push_to_hub reads
    trainer.is_main, trainer.run_dir, trainer.step = True, toy_run, 8
    with pytest.raises(zyn_ppo.UserError) as error:
        trainer.push_to_hub("me/zyn")
    message = str(error.value)
    assert "\n" not in message and "401 Client Error: Unauthorized" in message
    assert f"hf upload me/zyn {toy_run / 'checkpoints' / 'final' / 'policy'}" in message
