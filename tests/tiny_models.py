"""Tiny random models and a real byte-level BPE tokenizer, built on the spot (no network).

The tokenizer is trained in a few milliseconds on a small corpus in which "Yes", "No", " Yes" and
" No" (and the presets' answer words: positive/negative, science/drama, funny/serious, offensive/polite) are frequent, so
that each is a single token, exactly as in real instruction-tuned vocabularies.
The models are random: they test machinery (shapes, masks, maths), never quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

SPECIALS = ["<pad>", "</s>", "<s>", "<unk>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)

_CORPUS = [
    "Yes No yes no Yes. No. Yes, No, Response: Yes Response: No Answer: yes Answer: no",
    "yes no yes no yes no yes no yes no yes no yes no",
    "no", "No", "yes", "Yes", "no.", "No.", "yes.", "Yes.",
    "Review: this movie was great and I loved it. Is this movie review positive? Response: Yes",
    "Review: this film was bad and boring. Is this movie review positive? Response: No",
    "Text: you are an idiot. Does this text contain toxic speech? Response: Yes",
    "Text: have a nice day. Does this text contain toxic speech? Response: No",
    "Check whether the TEXT satisfies a PROPERTY. Respond with Yes or No. When uncertain, output No.",
    "Now complete the following example - input: PROPERTY: This review is about a funny sci-fi TEXT: output:",
    "Is this text too repetitive? Is this movie review from FilmAffinity? Is this prompt about nature?",
    "the a an and or but of to in on at for with from by it is was were be been this that these those",
    "I you he she we they my your his her our their good bad great awful funny boring love hate film",
    "acting plot story actor actress scene director music ending character characters watch watched",
    "0 1 2 3 4 5 6 7 8 9 ! ? . , ; : ' \" ( ) - the end. The movie. The story. A cat. A city at night.",
    "Review: a fine film.\nSentiment: positive Review: a dull film.\nSentiment: negative",
    "Text: robots in space.\nGenre: science Text: a sad war.\nGenre: drama Text: a joke.\nTone: funny serious",
    "Comment: you idiot.\nTone: offensive Comment: thank you.\nTone: polite offensive polite",
]


def make_tokenizer(chat_template: bool = True, vocab_size: int = 1000, extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the tiny corpus; `extra`: more training text (new words become tokens
    and shift the ids of others, so only a model built for them should use it)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + list(extra)) * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    for word in ("Yes", "No", " Yes", " No", "yes", "no", " positive", " negative", " science", " drama", " funny",
                 " serious", " offensive", " polite"):
        assert len(fast(word, add_special_tokens=False).input_ids) == 1, word
    return fast


def tiny_llama(tokenizer, seed: int = 0, layers: int = 4, hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(tokenizer, seed: int = 0, layers: int = 4, hidden: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=4, n_positions=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_neox(tokenizer, seed: int = 0, layers: int = 4, hidden: int = 32) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPTNeoXForCausalLM(config).eval()


def tiny_t5(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=hidden, d_kv=8, d_ff=2 * hidden, num_layers=layers,
        num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config).eval()


def sharpen(model, std: float = 0.3, seed: int = 0):
    """Larger random weights, so that P(yes) varies across texts and bugs show up in the numbers."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model


def save_tiny(model, tokenizer, folder: str | Path) -> str:
    """Save a tiny model and its tokenizer as a normal Hugging Face folder; return the path."""
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
