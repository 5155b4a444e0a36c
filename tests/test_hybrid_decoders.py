"""The project's own Phi / Llama decoders: numerically transformers' models with mamba_layers=[], and
hybrids (Mamba-2 in chosen layers) that save, load, train and expose layers one at a time."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

from llava_hybrid.hybrid import (
    HybridLlamaConfig,
    HybridLlamaForCausalLM,
    HybridPhiConfig,
    HybridPhiForCausalLM,
    register,
)

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)


def phi_config(**kw):
    # head_dim 16, partial rotary 0.5 -> 8 rotary channels (even, as transformers' Phi needs)
    return dict(TINY, partial_rotary_factor=0.5, rope_theta=10000.0, **kw)


def llama_config(**kw):
    return dict(TINY, num_key_value_heads=2, rope_theta=500.0, **kw)


def padded_batch():
    ids = torch.randint(0, TINY["vocab_size"], (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    mask[2, :1] = 0
    return ids, mask


def assert_same_on_tokens(ours, ref, mask):
    """Max |diff| over the non-padding positions (padding rows are never used)."""
    diff = (ours - ref).abs()[mask.bool()]
    assert diff.max().item() < 1e-5, diff.max().item()


def test_phi_equals_transformers_phi():
    ref = PhiForCausalLM(PhiConfig(**phi_config())).eval()
    ours = HybridPhiForCausalLM(HybridPhiConfig(**phi_config(), mamba_layers=[])).eval()
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ids, mask = padded_batch()
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, output_hidden_states=True)
        b = ref(ids, attention_mask=mask, output_hidden_states=True)
    assert_same_on_tokens(a.logits, b.logits, mask)
    assert len(a.hidden_states) == len(b.hidden_states) == TINY["num_hidden_layers"] + 1
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        assert_same_on_tokens(ha, hb, mask)
    with torch.no_grad():  # and without any mask (the is_causal path)
        assert (ours(ids).logits - ref(ids).logits).abs().max().item() < 1e-5


@pytest.mark.parametrize("tie", [False, True])
def test_llama_gqa_equals_transformers_llama(tie):
    ref = LlamaForCausalLM(LlamaConfig(**llama_config(tie_word_embeddings=tie))).eval()
    ours = HybridLlamaForCausalLM(HybridLlamaConfig(**llama_config(tie_word_embeddings=tie), mamba_layers=[])).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    ids, mask = padded_batch()
    with torch.no_grad():
        assert_same_on_tokens(ours(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits, mask)
        assert (ours(ids).logits - ref(ids).logits).abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["phi", "llama"])
def test_hybrid_save_load_round_trip(tmp_path, family):
    cls, cfg = (
        (HybridPhiForCausalLM, HybridPhiConfig(**phi_config(), mamba_layers=[0, 2]))
        if family == "phi"
        else (HybridLlamaForCausalLM, HybridLlamaConfig(**llama_config(), mamba_layers=[0, 2]))
    )
    model = cls(cfg).eval()
    keys = model.state_dict().keys()
    assert "model.layers.0.mamba.in_proj.weight" in keys
    assert not any(k.startswith("model.layers.0.self_attn.") for k in keys)
    assert "model.layers.1.self_attn.q_proj.weight" in keys
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert loaded.config.mamba_layers == [0, 2] and loaded.config.model_type == cfg.model_type
    ids, mask = padded_batch()
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask).logits, loaded(ids, attention_mask=mask).logits
    assert torch.equal(a, b)
    register()
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(auto) is cls and type(AutoConfig.from_pretrained(tmp_path)) is type(cfg)


def test_layer_callable_alone_matches_its_place_in_the_model():
    model = HybridPhiForCausalLM(HybridPhiConfig(**phi_config(), mamba_layers=[1, 3])).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        hidden = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for i in (0, 1, 2):  # an attention layer and Mamba layers, each on the model's own input
            alone = model.model.layers[i](hidden[i], attention_mask=mask)
            assert_same_on_tokens(alone, hidden[i + 1], mask)


def test_labels_loss_is_shifted_cross_entropy_ignoring_minus_100():
    model = HybridLlamaForCausalLM(HybridLlamaConfig(**llama_config(), mamba_layers=[2]))
    ids = torch.randint(0, TINY["vocab_size"], (2, 6))
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, TINY["vocab_size"])
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    as_tuple = model(ids, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.allclose(as_tuple[0], expected, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = HybridPhiForCausalLM(HybridPhiConfig(**phi_config(), mamba_layers=[0, 2]))
    ids = torch.randint(0, TINY["vocab_size"], (2, 8))
    model.train()
    model(ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23 name
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.model.gradient_checkpointing
    calls = []
    model.model.layers[0].register_forward_pre_hook(lambda *args: calls.append(1))
    model(ids, labels=ids).loss.backward()
    assert len(calls) == 2  # the layer ran again during backward: activations were recomputed
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, plain[name], atol=1e-6), name


@pytest.mark.parametrize(
    "layers, match",
    [([4], "outside"), ([1, 1], "repeated"), ([2, 0], "sorted")],
)
def test_config_rejects_bad_mamba_layers(layers, match):
    with pytest.raises(ValueError, match=match):
        HybridPhiConfig(**phi_config(), mamba_layers=layers)
    with pytest.raises(ValueError, match="mamba_backend"):
        HybridLlamaConfig(**llama_config(), mamba_backend="triton")
