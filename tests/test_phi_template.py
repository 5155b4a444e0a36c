"""The phi conversation template and the template/tokenizer check (real GPT-2 BPE tokenizer)."""
import shutil
from pathlib import Path

import pytest
from transformers import GPT2Tokenizer

import llava_hybrid
from llava import conversation as conversation_lib
from llava_hybrid.host.conversation import check_conv_mode, conv_phi, register, stop_string

GPT2 = Path(llava_hybrid.__file__).parent / "assets" / "gpt2"


@pytest.fixture(scope="module")
def phi_tokenizer(tmp_path_factory):
    """Phi-2-like: GPT-2 BPE, `<|endoftext|>` = eos = pad = unk, no BOS added."""
    d = tmp_path_factory.mktemp("gpt2")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / f, d / f)
    tok = GPT2Tokenizer.from_pretrained(d)
    tok.pad_token = tok.eos_token
    return tok


def test_register_adds_phi_idempotently():
    register()
    register()
    assert conversation_lib.conv_templates["phi"] is conv_phi
    assert conv_phi.version == "phi" and conv_phi.roles == ("USER", "ASSISTANT")


def test_phi_prompt_layout():
    conv = conv_phi.copy()
    conv.append_message("USER", "<image>\nWhat colour?")
    conv.append_message("ASSISTANT", "red")
    conv.append_message("USER", "Shape?")
    conv.append_message("ASSISTANT", None)
    system = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
              "gives helpful, detailed, and polite answers to the user's questions.")
    assert conv.get_prompt() == (system + " USER: <image>\nWhat colour? ASSISTANT: red<|endoftext|>"
                                 "USER: Shape? ASSISTANT:")
    assert stop_string(conv) == "<|endoftext|>"


def test_check_conv_mode_accepts_phi_with_phi_tokenizer(phi_tokenizer):
    assert check_conv_mode("phi", phi_tokenizer) is conv_phi
    assert phi_tokenizer("<|endoftext|>", add_special_tokens=False).input_ids == [phi_tokenizer.eos_token_id]


def test_check_conv_mode_unknown_template(phi_tokenizer):
    with pytest.raises(ValueError, match=r"--conv-mode/--version 'phi3'.*known"):
        check_conv_mode("phi3", phi_tokenizer)


def test_check_conv_mode_multi_token_stop_string(phi_tokenizer):
    # vicuna_v1 ends answers with "</s>": three GPT-2 BPE tokens, not a stop token of this tokenizer
    with pytest.raises(ValueError, match=r"--conv-mode/--version 'vicuna_v1'.*'</s>' is 3 tokens"):
        check_conv_mode("vicuna_v1", phi_tokenizer)


def test_check_conv_mode_phi_with_other_eos(tmp_path):
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / f, tmp_path / f)
    tok = GPT2Tokenizer.from_pretrained(tmp_path)
    tok.add_special_tokens({"eos_token": "<|end|>"})
    assert tok.eos_token == "<|end|>"
    with pytest.raises(ValueError, match=r"--conv-mode/--version 'phi'.*eos '<\|end\|>'"):
        check_conv_mode("phi", tok)
