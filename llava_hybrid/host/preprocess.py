"""Phi and ChatML preprocessing for LLaVA's data module, and its routing (with the collator of host.data).

Why LLaVA's own path breaks for Phi-2 (pad = eos = unk = `<|endoftext|>`, no BOS):
- `preprocess_v1` skips one BOS position per sample and reads `tokenizer.legacy`; `phi` is not a
  v1 version anyway, so LLaVA would use its legacy '###' path.
- `DataCollatorForSupervisedDataset` masks every pad position, and with pad == eos that drops the
  `<|endoftext|>` ending each answer (host.data.DataCollatorForPhi explains and fixes it).
The same holds for a ChatML model such as SmolLM2 (pad = eos = `<|im_end|>`, no BOS added): LLaVA's
ChatML path, `preprocess_mpt`, counts a sample's length as its tokens `!= pad_token_id` and subtracts a
BOS per round, so every sample mismatches and is masked whole.

`preprocess_phi` / `preprocess_chatml` render the conversation with their template (`phi`, `chatml`),
tokenize it whole (as LLaVA does, image tokens by `tokenizer_image_token`), and derive the labels by
tokenizing the prompt in pieces (phi: prompt | answer | `<|endoftext|>` | prompt | ...; chatml:
prompt | answer `<|im_end|>` | "\n" + prompt | ...); the pieces must re-assemble into exactly the whole
tokenization, else the sample is reported (never silently masked). Only the assistant turns and the
eos ending each are targets.
"""
from __future__ import annotations

import importlib
import logging
from typing import Dict, List, Sequence, Tuple

import torch
from llava import conversation as conversation_lib
from llava.constants import IGNORE_INDEX
from llava.conversation import Conversation, SeparatorStyle
from llava import mm_utils

from .._patching import original_of, replace_attr, when_imported
from .conversation import conv_chatml, conv_phi, stop_string
from .data import DataCollatorForPhi

logger = logging.getLogger(__name__)

MISMATCH_POLICIES = ("warn", "raise")


def _render_pieces(conv: Conversation, messages: List[Tuple[str, str]]) -> List[Tuple[str, bool]]:
    """Split the prompt of `messages` into (text, is_target) pieces; concatenated they are `conv.get_prompt()`.

    Adjacent non-target text is merged, so the only cuts are next to an answer: TWO style (phi)
    "...ASSISTANT:" | " answer" | sep2 | "USER: ...", MPT style (chatml) "...<|im_start|>assistant\n" |
    "answer<|im_end|>" | "\n<|im_start|>user\n...": cuts before a space-led word, after a newline and
    around a special token, where a BPE tokenization is additive.
    """
    if conv.sep_style == SeparatorStyle.TWO:
        return _render_two(conv, messages)
    if conv.sep_style == SeparatorStyle.MPT:
        return _render_mpt(conv, messages)
    raise ValueError(f"template {conv.version!r}: separator style {conv.sep_style} has no piecewise renderer")


def _render_two(conv: Conversation, messages: List[Tuple[str, str]]) -> List[Tuple[str, bool]]:
    pieces: List[Tuple[str, bool]] = []
    masked = conv.system + conv.sep
    for i, (role, message) in enumerate(messages):
        if not message:  # get_prompt() renders an empty turn as "ROLE:" with no separator
            masked += role + ":"
        elif i % 2 == 0:  # user turn
            masked += role + ": " + message + conv.sep
        else:  # assistant turn: the answer and its stop token are the targets
            pieces.append((masked + role + ":", False))
            pieces.append((" " + message, True))
            pieces.append((conv.sep2, True))
            masked = ""
    if masked:
        pieces.append((masked, False))
    return pieces


def _render_mpt(conv: Conversation, messages: List[Tuple[str, str]]) -> List[Tuple[str, bool]]:
    stop = stop_string(conv)            # "<|im_end|>": ends the answer, a target
    between = conv.sep[len(stop):]      # "\n": separates turns, not a target
    pieces: List[Tuple[str, bool]] = []
    masked = conv.system + conv.sep
    for i, (role, message) in enumerate(messages):
        if not message:  # get_prompt() renders an empty turn as the bare role (a generation prompt)
            masked += role
        elif i % 2 == 0:  # user turn
            masked += role + message + conv.sep
        else:  # assistant turn: the answer and its stop token are the targets
            pieces.append((masked + role, False))
            pieces.append((message + stop, True))
            masked = between
    if masked:
        pieces.append((masked, False))
    return pieces


def _messages(source: Sequence[Dict], conv: Conversation, index: int) -> List[Tuple[str, str]]:
    """LLaVA's {"from", "value"} turns -> [(role, text)], dropping a leading non-human turn."""
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    if source and roles.get(source[0]["from"]) != conv.roles[0]:
        source = source[1:]
    messages = []
    for j, sentence in enumerate(source):
        role = roles.get(sentence["from"])
        if role != conv.roles[j % 2]:
            raise ValueError(
                f"sample {index}: turn {j} is from {sentence['from']!r}; conversations must "
                f"alternate 'human' and 'gpt' starting with 'human'")
        messages.append((role, sentence["value"]))
    return messages


def _tokenize(text: str, tokenizer, has_image: bool) -> List[int]:
    if has_image:  # looked up at call time: activate() may have patched it (patches/image_token_bos.py)
        return mm_utils.tokenizer_image_token(text, tokenizer)
    return tokenizer(text).input_ids


def preprocess_phi(sources: Sequence[Sequence[Dict]], tokenizer, has_image: bool = False,
                   on_mismatch: str = "warn") -> Dict[str, List[torch.Tensor]]:
    """Tokenize LLaVA-format conversations with the `phi` template.

    Returns {"input_ids": [(L,) long], "labels": [(L,) long]}, one pair per source (index [0] works
    like LLaVA's batched tensors). No BOS; every answer is followed by `<|endoftext|>`, kept in
    input_ids and labels; only answers and their `<|endoftext|>` are unmasked. If the piecewise
    tokenization does not re-assemble into the whole one, `on_mismatch="raise"` raises ValueError
    and "warn" logs the sample and masks all its labels.
    """
    return preprocess_template(sources, tokenizer, _template("phi", conv_phi), has_image, on_mismatch)


def preprocess_chatml(sources: Sequence[Sequence[Dict]], tokenizer, has_image: bool = False,
                      on_mismatch: str = "warn") -> Dict[str, List[torch.Tensor]]:
    """Tokenize LLaVA-format conversations with the `chatml` template (same contract as `preprocess_phi`).

    The targets of each assistant turn are its answer and the `<|im_end|>` that ends it; the system
    turn, every user turn, the `<|im_start|>assistant\n` headers and the "\n" after each `<|im_end|>`
    are masked.
    """
    return preprocess_template(sources, tokenizer, _template("chatml", conv_chatml), has_image, on_mismatch)


def _template(version: str, default: Conversation) -> Conversation:
    """The active template when it is of `version` (a registered variant, e.g. another system prompt), else `default`."""
    conv = conversation_lib.default_conversation
    return conv if conv.version == version else default


def preprocess_template(sources: Sequence[Sequence[Dict]], tokenizer, conv: Conversation, has_image: bool = False,
                        on_mismatch: str = "warn") -> Dict[str, List[torch.Tensor]]:
    """`preprocess_phi` / `preprocess_chatml` for template `conv`: whole tokenization, labels from the pieces."""
    if on_mismatch not in MISMATCH_POLICIES:
        raise ValueError(f"on_mismatch={on_mismatch!r}; choose one of {MISMATCH_POLICIES}")
    probe = tokenizer("a").input_ids
    if tokenizer.bos_token_id is not None and len(probe) > 1 and probe[0] == tokenizer.bos_token_id:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} prepends a BOS token; the {conv.version} "
            f"template (--version {conv.version}) expects a tokenizer that adds none (the template writes "
            "every special token itself)")
    all_ids, all_labels = [], []
    for index, source in enumerate(sources):
        messages = _messages(source, conv, index)
        pieces = _render_pieces(conv, messages)
        prompt = "".join(text for text, _ in pieces)
        # 1. the whole prompt, tokenized as LLaVA tokenizes it
        input_ids = _tokenize(prompt, tokenizer, has_image)  # (L,)
        # 2. the same prompt piece by piece; targets keep their ids, the rest is IGNORE_INDEX
        piece_ids, labels = [], []
        for text, is_target in pieces:
            ids = _tokenize(text, tokenizer, has_image)
            piece_ids += ids
            labels += ids if is_target else [IGNORE_INDEX] * len(ids)
        # 3. verify: the pieces must be exactly the whole (LLaVA only compares lengths)
        if piece_ids != input_ids:
            labels = _report_mismatch(conv.version, prompt, input_ids, piece_ids, tokenizer, on_mismatch)
        max_len = tokenizer.model_max_length
        all_ids.append(torch.tensor(input_ids[:max_len], dtype=torch.long))
        all_labels.append(torch.tensor(labels[:max_len], dtype=torch.long))
    return dict(input_ids=all_ids, labels=all_labels)


def _report_mismatch(version, prompt, whole, pieces, tokenizer, on_mismatch) -> List[int]:
    at = next((k for k, (a, b) in enumerate(zip(whole, pieces)) if a != b), min(len(whole), len(pieces)))
    ctx = lambda ids: tokenizer.decode([t for t in ids[max(0, at - 3):at + 3] if t >= 0])  # noqa: E731
    msg = (f"{version} tokenization mismatch: whole prompt {len(whole)} tokens, pieces {len(pieces)} "
           f"tokens, first difference at token {at} (whole {ctx(whole)!r} vs pieces "
           f"{ctx(pieces)!r}); sample: {prompt[:300]!r}")
    if on_mismatch == "raise":
        raise ValueError(msg)
    logger.warning("%s -- all labels of this sample are masked", msg)
    return [IGNORE_INDEX] * len(whole)


OUR_TEMPLATES = {"phi": preprocess_phi, "chatml": preprocess_chatml}


def preprocess(sources, tokenizer, has_image: bool = False):
    """Stand-in for `llava.train.train.preprocess`: phi / chatml templates -> ours, else LLaVA's."""
    ours = OUR_TEMPLATES.get(conversation_lib.default_conversation.version)
    if ours is not None:
        return ours(sources, tokenizer, has_image=has_image)
    original = original_of(preprocess)
    if original is None:  # not patched (yet): LLaVA's own function is still in place
        original = importlib.import_module("llava.train.train").preprocess
    assert original is not preprocess
    return original(sources, tokenizer, has_image=has_image)


_HOOKED = False


def register() -> None:
    """Route LLaVA's data module through phi / chatml preprocessing and the pad==eos-safe collator (idempotent).

    Narrowest points: `make_supervised_data_module` builds `DataCollatorForSupervisedDataset(
    tokenizer=...)` and `LazySupervisedDataset.__getitem__` calls `preprocess(...)`, both looked
    up in `llava.train.train`'s globals at call time. Lazy: the replacement happens when
    `llava.train.train` is imported (at once if it already is), so eval processes never import the
    training stack; importing it on transformers >= 4.53 needs the layernorm_alias patch, which
    `llava_hybrid.activate()` arranges.
    """
    global _HOOKED
    if not _HOOKED:
        _HOOKED = True
        when_imported("llava.train.train", _patch_train_module)


def _patch_train_module(train_mod) -> None:
    replace_attr(train_mod, "preprocess", preprocess)
    replace_attr(train_mod, "DataCollatorForSupervisedDataset", DataCollatorForPhi)
