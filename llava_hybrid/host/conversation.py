"""TinyLLaVA's `phi` chat template and a ChatML `chatml` template as LLaVA `Conversation`s, and a
template/tokenizer check.

Prompt layout (SeparatorStyle.TWO, sep " ", sep2 "<|endoftext|>"):

    {system} USER: <image>\n{q1} ASSISTANT: {a1}<|endoftext|>USER: {q2} ASSISTANT: {a2}<|endoftext|>

`<|endoftext|>` is Phi-2's eos (and pad, and unk): one token that ends every answer, so the model
learns to stop and `generate` stops on eos. LLaVA ships no such template: `--version phi` would
otherwise fall into its legacy '###' path.

`chatml` (SeparatorStyle.MPT, sep "<|im_end|>\n") is the ChatML layout SmolLM2 / Qwen-style instruct
models are trained on, byte for byte what their chat template renders:

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<image>\n{q1}<|im_end|>\n
    <|im_start|>assistant\n{a1}<|im_end|>\n<|im_start|>user\n{q2}<|im_end|>\n<|im_start|>assistant\n

`<|im_end|>` (the tokenizer's eos) ends every turn; a prompt for generation ends with
"<|im_start|>assistant\n", as `add_generation_prompt=True` does. LLaVA's own ChatML template, `mpt`,
writes no newline after `<|im_end|>` (not what these models saw in training) and routes to
`preprocess_mpt`, which counts tokens by `!= pad_token_id` and assumes a BOS: with pad == eos ==
`<|im_end|>` it masks every sample; `chatml` goes to host.preprocess's own branch instead.
"""
from __future__ import annotations

from llava import conversation as conversation_lib
from llava.conversation import Conversation, SeparatorStyle

PHI_EOS = "<|endoftext|>"
CHATML_EOS = "<|im_end|>"

conv_phi = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    version="phi",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2=PHI_EOS,
)


conv_chatml = Conversation(
    system="<|im_start|>system\nYou are a helpful assistant.",  # short: every prompt carries it
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="chatml",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep=CHATML_EOS + "\n",
)

# template version -> the eos its answers end with (the tokenizer must have exactly this eos)
TEMPLATE_EOS = {"phi": PHI_EOS, "chatml": CHATML_EOS}


def register() -> None:
    """Add `conv_templates["phi"]` and `conv_templates["chatml"]` to LLaVA's template table (idempotent)."""
    conversation_lib.conv_templates.setdefault("phi", conv_phi)
    conversation_lib.conv_templates.setdefault("chatml", conv_chatml)


def stop_string(conv: Conversation) -> str:
    """The string that ends an assistant turn (what generation stops on): sep2 for TWO-style templates, else
    sep without the newline that separates turns (ChatML: `<|im_end|>`)."""
    return conv.sep2 if conv.sep_style == SeparatorStyle.TWO else conv.sep.rstrip("\n")


def _tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__


def check_conv_mode(conv_mode: str, tokenizer, trained_model: bool = False) -> Conversation:
    """Check that template `conv_mode` fits `tokenizer`; return the template.

    Raises ValueError (naming `--conv-mode`/`--version` and the tokenizer) when the template is
    unknown, when its stop string is not exactly one token of the tokenizer (the model could never
    emit it as one step, and stopping criteria would see it split), or when the template is phi's
    and the tokenizer's eos is not `<|endoftext|>` (the answers would end in a token generate does
    not stop on); the same for `chatml` and `<|im_end|>`.

    trained_model: the tokenizer is that of a chat-trained model whose template the data must follow
    (the distillation teacher): its answers end in its eos, so the template's stop string must be
    that eos token (phi for a Phi-2 teacher, v1 for a Vicuna one, chatml for a SmolLM2 one); another
    template would feed the teacher prompts it was never trained on.
    """
    register()
    templates = conversation_lib.conv_templates
    if conv_mode not in templates:
        raise ValueError(
            f"--conv-mode/--version {conv_mode!r} is not a known conversation template; "
            f"choose one of {sorted(templates)}")
    conv = templates[conv_mode]
    name = _tokenizer_name(tokenizer)
    stop = stop_string(conv)
    if stop:
        ids = tokenizer(stop, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(
                f"--conv-mode/--version {conv_mode!r}: its stop string {stop!r} is {len(ids)} tokens "
                f"{ids} of tokenizer {name!r}, not one; use a template written for this tokenizer")
    eos = TEMPLATE_EOS.get(conv.version)
    if eos is not None and tokenizer.eos_token != eos:
        raise ValueError(
            f"--conv-mode/--version {conv_mode!r} ends answers with {eos!r}, but tokenizer "
            f"{name!r} has eos {tokenizer.eos_token!r}; use a tokenizer whose eos is {eos!r} "
            f"(phi: Phi-2's GPT-2 BPE; chatml: a ChatML model's, e.g. SmolLM2) or another template")
    if trained_model and stop != tokenizer.eos_token:
        fitting = sorted(k for k, c in templates.items() if stop_string(c) == tokenizer.eos_token)
        raise ValueError(
            f"--conv-mode/--version {conv_mode!r} ends answers with {stop!r}, but the model of tokenizer {name!r} "
            f"ends them with its eos {tokenizer.eos_token!r}: the data would be rendered in a template it was "
            f"not trained on; use {' or '.join(fitting) or 'a template that stops on its eos'}")
    return conv
