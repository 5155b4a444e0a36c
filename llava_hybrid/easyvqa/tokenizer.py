"""The easy-VQA task tokenizer: a byte-level BPE trained on the task text and the phi template.

Phi-2's conditions are kept: `<|endoftext|>` is eos = pad = unk, there is no BOS, and the
pre-tokenizer / decoder are GPT-2's byte-level ones, so decode(encode(s)) == s for any string.
easy-VQA has 27 distinct words, so a few hundred tokens hold every word whole; a GPT-2-size
vocabulary (50,257) would make a tiny model's step 7-17x slower (its lm_head dominates).
"""
from __future__ import annotations

import os

EOS = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 512


def template_texts() -> list[str]:
    """The phi template's fixed strings (system prompt, roles, separators).

    TinyLLaVA's phi template reuses the vicuna_v1 system prompt and roles, so they are read from
    llava's own `conv_vicuna_v1` (and from a registered 'phi' template when there is one).
    """
    from llava import conversation as conv_lib

    convs = [conv_lib.conv_vicuna_v1]
    if "phi" in conv_lib.conv_templates:
        convs.append(conv_lib.conv_templates["phi"])
    texts = []
    for conv in convs:
        texts.append(conv.system)
        texts += [f" {role}: " for role in conv.roles]
    return texts


def task_corpus(questions) -> list[str]:
    """Training text: one rendered 'USER: q ASSISTANT: a' turn per distinct pair, each preceded by the
    template strings (they open every conversation, so they weigh as much as the questions)."""
    pairs = sorted({(q.text, q.answer) for q in questions})
    texts = []
    for t, a in pairs:
        texts += template_texts() + [f"USER: <image>\n{t} ASSISTANT: {a}{EOS}"]
    return texts


def train_task_tokenizer(texts: list[str], out_dir: str | None = None,
                         vocab_size: int = DEFAULT_VOCAB_SIZE, model_max_length: int = 2048):
    """Train the byte-level BPE on `texts`; returns a `PreTrainedTokenizerFast` (saved to out_dir).

    Deterministic for a given `texts` order (BPE training is deterministic).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size must exceed the 256 byte symbols + {EOS}, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=EOS, bos_token=None,
        model_max_length=model_max_length, padding_side="right", clean_up_tokenization_spaces=False)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        fast.save_pretrained(out_dir)
    return fast


def build_easyvqa_tokenizer(out_dir: str | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """The task tokenizer trained on the easy-VQA train questions/answers + the template strings."""
    from .data import load_split

    return train_task_tokenizer(task_corpus(load_split("train")[0]), out_dir, vocab_size)
