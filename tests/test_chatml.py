"""The `chatml` template (SmolLM2's ChatML layout), its preprocessing (only assistant turns and their
<|im_end|> are targets) and the image_token_bos patch (LLaVA's tokenizer_image_token would drop the token
after every image for a tokenizer whose bos is <|im_start|>). A real GPT-2 BPE tokenizer with ChatML's
special tokens stands in on every lane; the real SmolLM2 tokenizer is checked where it is converted."""
import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import GPT2Tokenizer

import llava_hybrid
from llava import conversation as conversation_lib
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava_hybrid._patching import original_of
from llava_hybrid.host import preprocess as P
from llava_hybrid.host.conversation import CHATML_EOS, check_conv_mode, conv_chatml, register, stop_string
from llava_hybrid.patches import image_token_bos

GPT2 = Path(llava_hybrid.__file__).parent / "assets" / "gpt2"
EOS = CHATML_EOS


def _text(tokenizer, ids) -> str:
    """The ids as text with nothing inserted around special tokens (transformers 4.x's slow decode adds spaces)."""
    return tokenizer.decode(ids, spaces_between_special_tokens=False)


def _gpt2(d, **kwargs):
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / f, d / f)
    return GPT2Tokenizer.from_pretrained(d, model_max_length=512, **kwargs)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """SmolLM2-like: byte-level BPE, bos <|im_start|>, eos = pad <|im_end|>, no BOS added."""
    return _gpt2(tmp_path_factory.mktemp("chatml"), bos_token="<|im_start|>", eos_token=EOS, pad_token=EOS,
                 additional_special_tokens=["<|im_start|>", EOS])


@pytest.fixture(scope="module")
def mm_utils():
    """llava.mm_utils with the plugin's patches applied."""
    llava_hybrid.activate()
    import llava.mm_utils
    return llava.mm_utils


def _three_turns(image=True):
    q1 = ("<image>\n" if image else "") + "What color is the shape?"
    return [[{"from": "human", "value": q1}, {"from": "gpt", "value": "red"},
             {"from": "human", "value": "Is there a circle in the image?"}, {"from": "gpt", "value": "Yes"},
             {"from": "human", "value": "What shape is in the image?"}, {"from": "gpt", "value": "triangle"}]]


def _prompt(*turns):
    conv = conv_chatml.copy()
    for k, text in enumerate(turns):
        conv.append_message(conv.roles[k % 2], text)
    return conv.get_prompt()


def test_chatml_renders_the_chatml_layout_and_registers_idempotently():
    register()
    register()
    assert conversation_lib.conv_templates["chatml"] is conv_chatml
    system = conv_chatml.system[len("<|im_start|>system\n"):]
    assert _prompt("<image>\nq1", "a1", "q2", None) == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<image>\nq1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n")
    assert stop_string(conv_chatml) == EOS
    assert stop_string(conversation_lib.conv_templates["mpt"]) == "<|im_end|>"  # LLaVA's own, unchanged


def test_check_conv_mode_chatml(tok, tmp_path):
    assert check_conv_mode("chatml", tok) is conv_chatml
    # <|im_end|> one token but not the eos: answers would end in a token generate never stops on
    other_eos = _gpt2(tmp_path, additional_special_tokens=["<|im_start|>", EOS])
    assert other_eos.eos_token == "<|endoftext|>"
    with pytest.raises(ValueError, match=r"--conv-mode/--version 'chatml'.*'<\|im_end\|>'.*eos '<\|endoftext\|>'"):
        check_conv_mode("chatml", other_eos)
    with pytest.raises(ValueError, match=r"stop string '<\|im_end\|>' is 7 tokens"):
        check_conv_mode("chatml", _gpt2(tmp_path))  # plain GPT-2: <|im_end|> is 7 BPE pieces


@pytest.mark.parametrize("has_image", [False, True])
def test_labels_are_exactly_the_assistant_turns_and_their_im_end(tok, has_image, mm_utils):
    out = P.preprocess_chatml(_three_turns(has_image), tok, has_image=has_image, on_mismatch="raise")
    ids, labels = out["input_ids"][0], out["labels"][0]
    keep = labels != IGNORE_INDEX
    assert torch.equal(labels[keep], ids[keep])
    assert _text(tok, labels[keep]) == f"red{EOS}Yes{EOS}triangle{EOS}"
    # the masked rest: system, user turns, assistant headers, the newline after each <|im_end|>
    assert (labels == tok.eos_token_id).sum() == 3 and (ids == tok.eos_token_id).sum() == 7
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok("\n").input_ids[0]
    prompt = "".join(t for t, _ in P._render_pieces(conv_chatml, P._messages(_three_turns(has_image)[0], conv_chatml, 0)))
    assert prompt == _prompt(*[t["value"] for t in _three_turns(has_image)[0]])
    if has_image:  # the image index sits where <image> was, and nothing after it is lost
        assert (ids == IMAGE_TOKEN_INDEX).sum() == 1
        k = int((ids == IMAGE_TOKEN_INDEX).nonzero())
        assert _text(tok, ids[k + 1:k + 3]) == "\nWhat"


def test_a_generation_prompt_ends_with_the_assistant_header_and_is_all_masked(tok):
    src = [[{"from": "human", "value": "Is it red?"}, {"from": "gpt", "value": ""}]]
    out = P.preprocess_chatml(src, tok, on_mismatch="raise")
    assert _text(tok, out["input_ids"][0]).endswith("<|im_start|>assistant\n")
    assert (out["labels"][0] == IGNORE_INDEX).all()


def test_llava_data_module_routes_chatml_to_ours(tok, tmp_path, monkeypatch):
    llava_hybrid.activate()
    import llava.train.train as train_mod
    (tmp_path / "d.json").write_text(json.dumps([{"id": "0", "conversations": _three_turns(False)[0]}]))
    monkeypatch.setattr(conversation_lib, "default_conversation", conv_chatml)
    module = train_mod.make_supervised_data_module(tokenizer=tok, data_args=train_mod.DataArguments(
        data_path=str(tmp_path / "d.json")))
    item = module["train_dataset"][0]
    assert _text(tok, item["labels"][item["labels"] != IGNORE_INDEX]) == f"red{EOS}Yes{EOS}triangle{EOS}"
    # LLaVA's own ChatML path (mpt) with pad == eos masks the whole sample: why chatml has its own branch
    upstream = original_of(P.preprocess) or train_mod.preprocess
    monkeypatch.setattr(conversation_lib, "default_conversation", conversation_lib.conv_templates["mpt"])
    theirs = upstream(copy.deepcopy(_three_turns(False)), tok)
    assert (theirs["labels"][0] == IGNORE_INDEX).all()


def test_image_token_bos_keeps_the_token_after_the_image(tok, mm_utils, tmp_path):
    prompt = _prompt("<image>\nWhat shape is it?", None)
    whole = tok(prompt.replace("<image>", "")).input_ids           # the text, the image left out
    patched = mm_utils.tokenizer_image_token(prompt, tok)
    assert [i for i in patched if i != IMAGE_TOKEN_INDEX] == whole and patched.count(IMAGE_TOKEN_INDEX) == 1
    assert torch.equal(mm_utils.tokenizer_image_token(prompt, tok, return_tensors="pt"), torch.tensor(patched))
    # LLaVA's own drops the "\n" after the image (it takes the template's <|im_start|> for an added BOS)
    upstream = original_of(mm_utils.tokenizer_image_token)
    assert upstream is not None and len(upstream(prompt, tok)) == len(patched) - 1
    # a tokenizer that adds its BOS keeps LLaVA's behaviour exactly
    llama_like = _gpt2(tmp_path, add_bos_token=True)
    assert image_token_bos.adds_bos(llama_like) and not image_token_bos.adds_bos(tok)
    text = "A chat. USER: <image>\nWhat shape? ASSISTANT:"
    assert mm_utils.tokenizer_image_token(text, llama_like) == upstream(text, llama_like)


def test_smollm2_tokenizer_renders_chatml_like_its_own_chat_template(smollm2_checkpoint):
    """On the real SmolLM2 tokenizer the template equals the model's own chat template (system turn given) and
    the pieces re-assemble."""
    from transformers import AutoTokenizer

    smol = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    system = conv_chatml.system[len("<|im_start|>system\n"):]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "What shape is it?"},
                {"role": "assistant", "content": "circle"}, {"role": "user", "content": "Is it red?"}]
    assert smol.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == _prompt(
        "What shape is it?", "circle", "Is it red?", None)
    assert check_conv_mode("chatml", smol) is conv_chatml
    out = P.preprocess_chatml(_three_turns(True), smol, has_image=True, on_mismatch="raise")
    labels = out["labels"][0]
    assert _text(smol, labels[labels != IGNORE_INDEX]) == f"red{EOS}Yes{EOS}triangle{EOS}"
