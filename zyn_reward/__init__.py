"""Zero-shot yes/no reward models (ZYN, Gallego 2023, arXiv 2308.06385).

Ask an instruction-tuned language model a yes/no question about a text and read the probability of
"Yes" against "No" at the first answer token:

    p = exp(l_yes) / (exp(l_yes) + exp(l_no))                 # one question
    reward = (p - 0.5) * 10                                    # Eq. (3)
    p_ensemble = sum_q w_q p_q(target_q) / sum_q w_q           # Eq. (4)

    from zyn_reward import ZeroShotRewardModel, YesNoQuestion, TEMPLATES
    q = YesNoQuestion("Is this movie review positive?", template=TEMPLATES["flan_review"])
    rm = ZeroShotRewardModel("smollm2-135m-instruct", questions=q)    # or "google/flan-t5-large"
    rm.probabilities(["I loved this film."])
    rm.reward_fn(samples)                                              # trlx reward_fn
    rm.as_trl_reward()                                                 # TRL GRPO/RLOO reward func

    # few-shot examples (their key/value cache is computed once) and a question with its negation:
    q = YesNoQuestion("Is this review positive?", examples=[("Works great.", "yes"), ("Awful.", "no")])
    pair = YesNoQuestion.pair("Is this review positive?", "Is this review negative?")

The modules, by concern:

    recipe.py    the paper's recipe on one screen (templates, YesNoQuestion, answer words, Eq. 3 and 4)
                 and reference_probabilities, its plain slow computation
    model.py     ZeroShotRewardModel: the same numbers fast (batching, prefix cache, precision,
                 calibration), tested against the recipe
    spec.py      JudgeSpec: how a judge is asked a question, as the experiment scripts take it
    loading.py   finding and loading a judge (embedded name, folder, hub), its device and precision
    evaluate.py  AUROC, calibration error and the labelled files they are measured on
    tune.py      choosing how to ask a question, by measurement (`python -m zyn_reward tune`)
    cli.py       the command line: python -m zyn_reward score|eval|tune (--help)
    errors.py    UserError, ModelLoadError and the one-line messages the user sees
"""

# re-exported: the names users imported from zyn_reward.py when it was one module
from zyn_models import (EMBEDDED_MODELS, TRUE_VALUES, UserError, embedded_model_path, hub_cache_dir,
                        hub_cached, hub_offline, hub_unreachable)

from .cli import main
from .errors import ModelLoadError
from .evaluate import auroc, expected_calibration_error, read_labeled, split_lines
from .loading import bf16_is_fast
from .model import (CONTENT_FREE, MAX_LENGTH_CAP, POST_HEAD_ATTRIBUTES, TOKEN_BUDGET, ZeroShotRewardModel,
                    calibration_offset)
from .recipe import (EXAMPLE_ANSWERS, EXAMPLE_SEPARATOR, TEMPLATES, TRANSFORMS, YES_NO, YesNoQuestion,
                     ensemble, question_name, reference_probabilities, reference_reward, transform_reward)
from .spec import JudgeSpec

__all__ = [
    "CONTENT_FREE", "EMBEDDED_MODELS", "EXAMPLE_ANSWERS", "EXAMPLE_SEPARATOR", "MAX_LENGTH_CAP",
    "POST_HEAD_ATTRIBUTES", "TEMPLATES", "TOKEN_BUDGET", "TRANSFORMS", "TRUE_VALUES", "YES_NO", "JudgeSpec",
    "ModelLoadError", "UserError", "YesNoQuestion", "ZeroShotRewardModel", "auroc", "bf16_is_fast",
    "calibration_offset", "embedded_model_path", "ensemble", "expected_calibration_error", "hub_cache_dir",
    "hub_cached", "hub_offline", "hub_unreachable", "main", "question_name", "read_labeled",
    "reference_probabilities", "reference_reward", "split_lines", "transform_reward",
]
