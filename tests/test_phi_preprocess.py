"""Phi preprocessing (no BOS, every <|endoftext|> kept and learned) and the pad==eos-safe collator."""
import copy
import logging
import shutil
import string
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

import llava_hybrid
from llava import conversation as conversation_lib
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava_hybrid._patching import original_of
from llava_hybrid.host import preprocess as P
from llava_hybrid.host.data import DataCollatorForPhi
from llava_hybrid.host.conversation import conv_phi

GPT2 = Path(llava_hybrid.__file__).parent / "assets" / "gpt2"
EOS = "<|endoftext|>"


def _train_module():
    """`llava.train.train`, imported after activate() (its layernorm_alias patch makes it importable)."""
    llava_hybrid.activate()
    import llava.train.train as train_mod
    return train_mod


def _gpt2(d):
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / f, d / f)
    tok = GPT2Tokenizer.from_pretrained(d, model_max_length=512)
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """Phi-2-like: GPT-2 BPE, `<|endoftext|>` = eos = pad = unk (50256), no BOS."""
    return _gpt2(tmp_path_factory.mktemp("gpt2"))


def _three_turns(image=True):
    q1 = ("<image>\n" if image else "") + "What color is the shape?"
    return [[{"from": "human", "value": q1}, {"from": "gpt", "value": "red"},
             {"from": "human", "value": "Is there a circle in the image?"}, {"from": "gpt", "value": "Yes"},
             {"from": "human", "value": "What shape is in the image?"}, {"from": "gpt", "value": "triangle"}]]


@pytest.mark.parametrize("has_image", [False, True])
def test_three_turns_labels_are_exactly_answers_and_eos(tok, has_image):
    out = P.preprocess_phi(_three_turns(has_image), tok, has_image=has_image, on_mismatch="raise")
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert ids.shape == labels.shape
    keep = labels != IGNORE_INDEX
    assert torch.equal(labels[keep], ids[keep])  # unmasked labels are the inputs themselves
    assert tok.decode(labels[keep]) == f" red{EOS} Yes{EOS} triangle{EOS}"
    # one <|endoftext|> right after each answer, in inputs and labels, and no other
    eos_pos = (ids == tok.eos_token_id).nonzero().flatten().tolist()
    assert len(eos_pos) == 3 and ids[-1] == tok.eos_token_id
    assert all(labels[p] == tok.eos_token_id for p in eos_pos)
    # no BOS: the sequence starts with the system prompt's first token
    assert ids[0].item() == tok("A").input_ids[0]
    # masked part decodes to the prompt without the answers
    conv = conv_phi.copy()
    for i, turn in enumerate(_three_turns(has_image)[0]):
        conv.append_message(conv.roles[i % 2], turn["value"])
    prompt_ids = ids[~keep]
    if has_image:
        assert (ids == IMAGE_TOKEN_INDEX).sum() == 1 and labels[ids == IMAGE_TOKEN_INDEX].item() == IGNORE_INDEX
        prompt_ids = prompt_ids[prompt_ids != IMAGE_TOKEN_INDEX]
    expected = conv.get_prompt()
    for answer in ("red", "Yes", "triangle"):
        expected = expected.replace(f" {answer}{EOS}", "", 1)
    assert tok.decode(prompt_ids) == expected.replace("<image>", "")


def test_render_pieces_reassemble_the_template_prompt():
    conv = conv_phi.copy()
    msgs = [("USER", "q1"), ("ASSISTANT", "a1"), ("USER", "q2"), ("ASSISTANT", "a2"), ("USER", "q3")]
    for role, m in msgs:
        conv.append_message(role, m)
    pieces = P._render_pieces(conv_phi, msgs)
    assert "".join(t for t, _ in pieces) == conv.get_prompt()
    assert [t for t, target in pieces if target] == [" a1", EOS, " a2", EOS]


def test_leading_gpt_turn_dropped_and_bad_order_rejected(tok):
    src = [[{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]]
    out = P.preprocess_phi(src, tok, on_mismatch="raise")
    assert tok.decode(out["labels"][0][out["labels"][0] != IGNORE_INDEX]) == f" a{EOS}"
    bad = [[{"from": "human", "value": "q"}, {"from": "human", "value": "q again"}]]
    with pytest.raises(ValueError, match="sample 0: turn 1 is from 'human'"):
        P.preprocess_phi(bad, tok)


def test_tokenizer_with_bos_rejected(tmp_path):
    tok = _gpt2(tmp_path)
    tok.add_bos_token = True  # GPT-2's bos is <|endoftext|>; Phi-2 never adds it
    assert tok("a").input_ids[0] == tok.bos_token_id
    with pytest.raises(ValueError, match="prepends a BOS"):
        P.preprocess_phi(_three_turns(False), tok)


def _merging_tokenizer():
    """A char BPE without pre-tokenizer that merges ': ' -- so '...ASSISTANT:' | ' red' is not additive.

    Spaces are normalised to '▁' (and decoded back): tokenizers < 0.20 (transformers 4.37's lane) saves
    a merge as one space-joined string, so a merge holding ' ' would not survive the tokenizer's copy.
    """
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + "▁\n'"))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab[":▁"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[(":", "▁")], unk_token="?"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.decoder = decoders.Replace("▁", " ")
    bpe.add_special_tokens([EOS])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS, unk_token="?",
                                   model_max_length=4096)


def test_mismatch_is_reported_never_silent(caplog):
    tok = _merging_tokenizer()
    assert tok("x: y").input_ids != tok("x:").input_ids + tok(" y").input_ids
    with pytest.raises(ValueError, match=r"phi tokenization mismatch.*sample: .A chat"):
        P.preprocess_phi(_three_turns(False), tok, on_mismatch="raise")
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        out = P.preprocess_phi(_three_turns(False), tok, on_mismatch="warn")
    assert "phi tokenization mismatch" in caplog.text and "What color is the shape?" in caplog.text
    assert (out["labels"][0] == IGNORE_INDEX).all()


def test_collator_keeps_in_sample_eos_attended_when_pad_is_eos(tok):
    srcs = [_three_turns(False)[0], _three_turns(False)[0][:2]]
    instances = [{k: v[0] for k, v in P.preprocess_phi([s], tok, on_mismatch="raise").items()} for s in srcs]
    batch = DataCollatorForPhi(tokenizer=tok)(instances)
    n0, n1 = (len(i["input_ids"]) for i in instances)
    assert tok.pad_token_id == tok.eos_token_id and n0 > n1
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, n0)
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]  # true lengths, eos included
    assert (batch["labels"][1, n1:] == IGNORE_INDEX).all() and (batch["input_ids"][1, n1:] == tok.pad_token_id).all()
    # LLaVA's prepare_inputs_labels_for_multimodal keeps only attended positions: every eos survives
    for b, inst in enumerate(instances):
        kept = batch["labels"][b][batch["attention_mask"][b]]
        assert torch.equal(kept, inst["labels"])
        assert (kept == tok.eos_token_id).sum() == (inst["input_ids"] == tok.eos_token_id).sum() > 0
    # LLaVA's own collator masks them (the bug this collator exists for)
    train_mod = _train_module()  # importing it puts our collator in place (lazy register)
    llava_collator = original_of(DataCollatorForPhi) or train_mod.DataCollatorForSupervisedDataset
    assert llava_collator is not DataCollatorForPhi
    mask = llava_collator(tokenizer=tok)(instances)["attention_mask"]
    assert mask.sum() == batch["attention_mask"].sum() - 4  # 3 + 1 in-sample eos lost


def test_collator_stacks_images(tok):
    inst = {k: v[0] for k, v in P.preprocess_phi(_three_turns(True), tok).items()}
    batch = DataCollatorForPhi(tokenizer=tok)([dict(inst, image=torch.zeros(3, 8, 8)),
                                                 dict(inst, image=torch.ones(3, 8, 8))])
    assert batch["images"].shape == (2, 3, 8, 8)


def test_register_routes_llava_data_module(tok, tmp_path, monkeypatch):
    train_mod = _train_module()
    upstream_preprocess = original_of(train_mod.preprocess) or train_mod.preprocess
    P.register()
    P.register()  # idempotent
    assert train_mod.preprocess is P.preprocess and original_of(P.preprocess) is upstream_preprocess
    assert train_mod.DataCollatorForSupervisedDataset is DataCollatorForPhi
    import json
    (tmp_path / "d.json").write_text(json.dumps([{"id": "0", "conversations": _three_turns(False)[0]}]))
    args = train_mod.DataArguments(data_path=str(tmp_path / "d.json"))
    monkeypatch.setattr(conversation_lib, "default_conversation", conv_phi)
    module = train_mod.make_supervised_data_module(tokenizer=tok, data_args=args)
    assert isinstance(module["data_collator"], DataCollatorForPhi)
    item = module["train_dataset"][0]
    assert tok.decode(item["labels"][item["labels"] != IGNORE_INDEX]) == f" red{EOS} Yes{EOS} triangle{EOS}"
    # any other template still goes to LLaVA's preprocess
    monkeypatch.setattr(conversation_lib, "default_conversation", conversation_lib.conv_templates["v0"])
    src = [[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]]
    # (LLaVA's legacy path edits the sources in place: give each call its own copy)
    ours, theirs = P.preprocess(copy.deepcopy(src), tok), upstream_preprocess(copy.deepcopy(src), tok)
    assert torch.equal(ours["input_ids"][0], theirs["input_ids"][0])


def test_register_is_lazy_until_llava_train_is_imported():
    """activate() in a fresh process leaves llava.train.train unimported (eval stays light); once it is
    imported, its preprocess and collator are ours."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "import llava_hybrid, llava_hybrid.host as host\n"
        "llava_hybrid.activate(); host.register()\n"
        "import llava.model.builder, llava.mm_utils\n"
        "assert 'llava.train.train' not in sys.modules, 'imported by activate()'\n"
        "import llava.train.train as t\n"
        "from llava_hybrid.host import data, preprocess as P\n"
        "assert t.preprocess is P.preprocess, t.preprocess\n"
        "assert t.DataCollatorForSupervisedDataset is data.DataCollatorForPhi\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
