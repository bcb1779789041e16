"""zyn_ppo.config and the script configuration: trlx YAML, updates, overrides, the hub check."""


import pytest

import zyn_ppo
from helpers import ROOT

# ----------------------------------------------------------------------------------- config

TRLX_YAML = """
train:
  seq_length: 48
  epochs: 100
  total_steps: 1600
  batch_size: 2
  checkpoint_interval: 10000
  eval_interval: 100
  save_best: False
  save_optimizer: True
  project_name: "trlx-demo"
  entity_name: "someone"
  group_name: "Pythia20B"
  tags: ["a", "b"]
  checkpoint_dir: "ckpts"
  rollout_logging_dir: null
  minibatch_size: 1
  tracker: "wandb"
  logging_dir: null
  trainer_kwargs: {}
  pipeline: "PromptPipeline"
  trainer: "AcceleratePPOTrainer"
model:
  model_path: "EleutherAI/gpt-neox-20b"
  model_arch_type: "causal"
  num_layers_unfrozen: 2
  peft_config: null
  model_extra_configs: {}
tokenizer:
  tokenizer_path: "EleutherAI/gpt-neox-20b"
  padding_side: "left"
  truncation_side: "right"
  tokenizer_extra_configs: {}
optimizer:
  name: "adamw"
  kwargs: {lr: 1.0e-6, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 1.0e-6}
scheduler:
  name: "cosine_annealing"
  kwargs: {T_max: 10000, eta_min: 1.0e-6}
method:
  name: "ppoconfig"
  num_rollouts: 128
  chunk_size: 8
  ppo_epochs: 4
  init_kl_coef: 0.05
  target: 6
  horizon: 10000
  gamma: 1
  lam: 0.95
  cliprange: 0.2
  cliprange_value: 0.2
  vf_coef: 1
  scale_reward: False
  ref_mean: null
  ref_std: null
  cliprange_reward: 10
  gen_kwargs: {max_new_tokens: 40, top_k: 0, top_p: 1.0, do_sample: True}
  gen_experience_kwargs: null
"""


def test_config_files_and_trlx_yaml(tmp_path):
    s = zyn_ppo.TRLConfig.load_yaml(ROOT / "configs" / "ppo_flan_sentiments.yml")
    assert (s.train.batch_size, s.model.model_path, s.model.num_layers_unfrozen) == (64, "lvwerra/gpt2-imdb", 2)
    assert s.method.gen_kwargs == dict(max_new_tokens=40, top_k=0, top_p=1.0, do_sample=True)
    assert s.optimizer.kwargs["lr"] == 1e-4 and s.scheduler.kwargs == dict(T_max=10000, eta_min=1e-4)
    d = zyn_ppo.TRLConfig.load_yaml(ROOT / "configs" / "ppo_flan_detox.yml")
    assert (d.train.seq_length, d.train.total_steps, d.train.batch_size) == (192, 30000, 16)
    assert (d.model.model_path, d.model.num_layers_unfrozen) == ("EleutherAI/pythia-410m", 1)
    (tmp_path / "trlx.yml").write_text(TRLX_YAML)
    t = zyn_ppo.TRLConfig.load_yaml(tmp_path / "trlx.yml")
    assert t.train.tags == ["a", "b"] and t.method.chunk_size == 8
    assert zyn_ppo.TRLConfig.from_dict(t.to_dict()) == t


def test_config_update_and_unknown_keys():
    base = zyn_ppo.TRLConfig.load_yaml(ROOT / "configs" / "ppo_flan_sentiments.yml").to_dict()
    c = zyn_ppo.TRLConfig.update(base, {"train.total_steps": 100, "method.init_kl_coef": 0.1,
                                        "method.gen_kwargs.max_new_tokens": 8, "optimizer": {"name": "adam"}})
    assert (c.train.total_steps, c.method.init_kl_coef, c.method.gen_kwargs["max_new_tokens"]) == (100, 0.1, 8)
    assert c.optimizer.name == "adam" and c.optimizer.kwargs["lr"] == 1e-4
    assert base["train"]["total_steps"] == 10000  # the base is not modified
    with pytest.raises(ValueError, match="train.totl_steps"):
        zyn_ppo.TRLConfig.update(base, {"train.totl_steps": 1})
    with pytest.raises(ValueError, match="trian.seed"):
        zyn_ppo.TRLConfig.update(base, {"trian.seed": 1})
    with pytest.raises(ValueError, match="method.foo"):
        zyn_ppo.TRLConfig.from_dict({**base, "method": {**base["method"], "foo": 1}})


def test_configure_changes_then_overrides():
    path = ROOT / "configs" / "ppo_flan_sentiments.yml"
    config, changed = zyn_ppo.configure(path, {"train.total_steps": 100, "train.seed": 7,
                                               "train.checkpoint_interval": 7}, (
        "optimizer.kwargs.lr=3e-4",  # JSON first: a number (YAML alone reads "3e-4" as a string)
        "train.checkpoint_interval=8",  # overrides come after the changes
        "train.project_name=my run",  # not JSON: YAML
        "method.gen_kwargs.do_sample=false", "train.batch_size=64"))  # the last one equals the YAML's value
    assert config.optimizer.kwargs["lr"] == 3e-4 and isinstance(config.optimizer.kwargs["lr"], float)
    assert (config.train.total_steps, config.train.seed, config.train.project_name) == (100, 7, "my run")
    assert config.train.checkpoint_interval == 8
    assert config.method.gen_kwargs["do_sample"] is False
    assert changed["optimizer.kwargs.lr"] == "0.0001 -> 0.0003" and changed["train.total_steps"] == "10000 -> 100"
    assert changed["method.gen_kwargs.do_sample"] == "True -> False" and changed["train.checkpoint_interval"].endswith("-> 8")
    assert "train.batch_size" not in changed  # unchanged settings are not reported
    with pytest.raises(ValueError, match="train.batch_size"):
        zyn_ppo.configure(path, {}, ["train.batch_size"])  # no "=": named in the error
    with pytest.raises(ValueError, match="train.seed has its own flag, use --seed"):
        zyn_ppo.configure(path, {}, ["train.seed=8"])
    with pytest.raises(ValueError, match="train.totl_steps"):
        zyn_ppo.configure(path, {}, ["train.totl_steps=1"])


def test_check_hub_skips_local_and_embedded_and_names_what_it_needed(tmp_path, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("check_hub should not have contacted the hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with monkeypatch.context() as m:
        m.setattr(urllib.request, "urlopen", no_network)
        zyn_ppo.check_hub([str(tmp_path), "smollm2-135m-instruct", None])  # a folder, an embedded model
        m.setenv("HF_HUB_OFFLINE", "1")  # the local cache only
        zyn_ppo.check_hub(["some-org/some-model"])
        m.delenv("HF_HUB_OFFLINE")
        m.setenv("TRANSFORMERS_OFFLINE", "1")  # transformers' own name for it
        zyn_ppo.check_hub(["some-org/some-model"])
    with pytest.raises(zyn_ppo.UserError) as error:
        zyn_ppo.check_hub(["some-org/some-model", str(tmp_path), "some-org/some-model", "imdb"])
    message = str(error.value)
    assert "cannot reach http://127.0.0.1:9" in message and "--preset cpu" in message
    assert message.count("some-org/some-model") == 1 and "imdb" in message and str(tmp_path) not in message


