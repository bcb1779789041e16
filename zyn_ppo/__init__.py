"""A compact PPO engine for language models with trlx's behaviour (AcceleratePPOTrainer, 2023).

    import zyn_ppo
    config = zyn_ppo.TRLConfig.load_yaml("configs/ppo_flan_sentiments.yml")
    config = zyn_ppo.TRLConfig.update(config.to_dict(), {"train.total_steps": 100})
    trainer = zyn_ppo.train(reward_fn=reward_fn, prompts=prompts, eval_prompts=eval_prompts,
                            metric_fn=metric_fn, config=config)

Multi-process (DDP, each rank generates and scores its own rollouts):

    accelerate launch --num_processes 2 my_script.py          # GPUs (DeepSpeed/FSDP via accelerate config)
    torchrun --nproc_per_node 2 my_script.py                  # CPU processes (gloo), e.g. to test

One iteration, as trlx did it:
1. rollouts: `method.num_rollouts` prompts per process, in chunks of `method.chunk_size`, sampled with
   `method.gen_kwargs` (a response ends at the first EOS, which is part of the response; later tokens are
   masked out), scored with `reward_fn(samples, prompts=..., outputs=...)`;
2. score processing: optional scaling (`method.scale_reward`: none | "ref" | "running"), then clipping
   to +-`method.cliprange_reward`;
3. per-token reward: -kl_coef * (logp_policy - logp_ref) at every response token, plus the score at the
   last response token;
4. GAE (`gamma`, `lam`); returns = advantages + values; advantages whitened over the minibatch;
5. for each minibatch of `train.batch_size` rollouts, `method.ppo_epochs` gradient steps of the clipped
   policy loss + `vf_coef` * clipped value loss; then the adaptive KL controller updates once, fed with
   the approximate KL between the current and the rollout policy of the last step (trlx's signal; set
   `method.kl_signal: ref` to feed it the KL to the reference instead; `method.target: null` keeps the
   coefficient fixed);
6. when the rollout store is used up, new rollouts are collected (`train.epochs` collections at most).

The reference model: with `model.num_layers_unfrozen = k > 0`, only the top k blocks (plus embeddings,
final norm and LM head, as trlx left them trainable) train, and the reference is a "hydra" branch of
frozen copies of the top k blocks, final norm and LM head, fed by the shared trunk's hidden state; its
logits equal the policy's at the start. With k <= 0 everything trains (k = 0: only embeddings, final
norm and heads) and the reference is a full frozen copy.

Run directory (`train.logging_dir`, only the main process writes):
- run.json: what defines the run (config, reward spec, prompt hashes) and what it ran with (versions,
  command); config.yaml: the resolved config;
- metrics.jsonl: one JSON line per optimizer step (`step` = steps done; step 0 = the first evaluation).
  Evaluation lines (step 0, every eval_interval, the end): reward/mean, metrics/<name>, eval/index,
  time/eval. Training lines: loss/total, loss/policy, loss/value, policy/approx_kl, policy/clipfrac,
  values/clipfrac, values/mean, returns/mean, kl/ref (KL to the reference per sequence, sum over tokens of
  logp - logp_ref, mean over the current rollouts), kl_coef, rollout/score_mean, episodes, lr, time/step,
  time/elapsed; on steps that collected rollouts also rollout/score_std, rollout/score_running_mean,
  rollout/score_running_std, rollout/response_length, rollout/count, kl/ref_per_token,
  time/rollout_generate, time/rollout_score, time/rollout_forward;
- samples/eval_<step>.jsonl: prompt, output, reward, metrics per evaluation prompt;
- figures/: one PNG and SVG per evaluation metric, drawn at the end of the run;
- checkpoints/step_<n> (the last two periodic ones) and checkpoints/final: policy/ (save_pretrained +
  tokenizer), value_head.pt, reference_branch.pt (hydra), trainer_state.pt (optimizer, scheduler, KL
  coefficient, reward statistics, rollout store, prompt order, RNG states, step), meta.json (step and a
  sha256 of every file); the final one's policy/ also holds a model card, README.md (card.py). Written to a
  temporary folder and renamed. `train.resume_from_checkpoint: auto`
  continues from the latest intact one (a damaged one is skipped with a warning naming the file): lines of
  metrics.jsonl after its step are dropped, time/elapsed continues, and on one process the resumed curve is
  identical to an uninterrupted run. Ctrl-C or SIGTERM saves a checkpoint after the current step; a second
  one quits at once without saving. A run directory belongs to one run (see runio.py).

Differences from trlx at commit 206d885 (2023-02-24, the version the original scripts pinned), each
deliberate:
- position ids come from the attention mask in every forward; trlx 206d885 passed none in its PPO
  forwards, so with left-padded prompts its GPT-2 logprobs, ratio and KL belonged to a position-shifted
  policy (fixed in later trlx);
- a response ends at its first EOS, which is its last action and carries the score; at 206d885 every
  response shorter than the longest of its chunk got one extra pad (= EOS) action carrying the score;
- responses are kept as generated tokens (trlx decoded and re-tokenized them);
- advantages are whitened over valid tokens only (trlx included padding), and the approximate KL fed to
  the adaptive controller is a mean over valid tokens (trlx's was over the padded batch: valid/total of
  it; with the paper's target of 6 both sit at the controller's -0.2 clip);
- the model's own generation defaults are dropped so that sampling follows gen_kwargs only;
- multi-process runs score rewards on every rank (trlx gathered samples to the main process);
- the tracker defaults to none (metrics.jsonl is always written), and models load in fp32 unless
  model.dtype says otherwise.
Neither trlx nor zyn_ppo runs dropout during PPO (logprobs at the first PPO step equal the rollout's).

Layout: config.py (settings), core.py (the maths), model.py (policy, value head, reference, freezing),
trainer.py (the loop), runio.py (run directory, logging, checkpoints), card.py (the final policy's model
card), script.py (what the experiment scripts share).
"""

from .config import ConfigError, TRLConfig, UserError
from .core import (AdaptiveKLController, FixedKLController, RunningMoments, gae_advantages, kl_penalty_rewards,
                   logprobs_of_labels, masked_mean, pad_cat, policy_loss, trim, value_loss, whiten)
from .model import (ARCHITECTURES, PolicyWithValueHead, arch_parts, freeze_layers, load_causal_lm, load_policy,
                    load_tokenizer, position_ids_from)
from .runio import RunLogger
from .script import SCRIPT_FLAGS, configure
from .trainer import PPOTrainer, check_scores, train
from zyn_models import check_hub, resolve_model_path

__all__ = [
    "ARCHITECTURES", "AdaptiveKLController", "ConfigError", "FixedKLController", "PPOTrainer", "PolicyWithValueHead",
    "RunLogger", "RunningMoments", "SCRIPT_FLAGS", "TRLConfig", "UserError", "arch_parts", "check_hub", "check_scores",
    "configure", "freeze_layers", "gae_advantages", "kl_penalty_rewards", "load_causal_lm", "load_policy",
    "load_tokenizer", "logprobs_of_labels", "masked_mean", "pad_cat", "policy_loss", "position_ids_from",
    "resolve_model_path", "train", "trim", "value_loss", "whiten",
]
