"""HybridCache and the decode loop: cached decoding equals full recomputation, padding, beams, eos,
sampling, half precision, and constant-size Mamba state."""

import pytest
import torch
import torch.nn.functional as F

from llava_hybrid.hybrid import (
    HybridCache,
    HybridLlamaConfig,
    HybridLlamaForCausalLM,
    HybridPhiConfig,
    HybridPhiForCausalLM,
    generate_tokens,
)

VOCAB = 61
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            mamba_layers=[0, 2], mamba_chunk_size=4)


def make(family="phi", dtype=torch.float32):
    torch.manual_seed(0)
    if family == "phi":
        model = HybridPhiForCausalLM(HybridPhiConfig(**TINY, partial_rotary_factor=0.5))
    else:
        # GQA and d_state != head_dim: the Mamba state shapes differ from the attention ones
        model = HybridLlamaForCausalLM(HybridLlamaConfig(**TINY, num_key_value_heads=2, mamba_d_state=8))
    model.config.eos_token_id = None  # model.generate would stop at config.eos_token_id (2 by default)
    return model.to(dtype).eval()


def prompt(batch=2, length=7):
    return torch.randint(0, VOCAB, (batch, length))


@pytest.mark.parametrize("family", ["phi", "llama"])
def test_token_by_token_decoding_equals_full_forward(family):
    model = make(family)
    ids = prompt(2, 19)  # prefill of 6 spans chunks of 4 plus a remainder
    with torch.no_grad():
        full = model(ids).logits  # (B, L, V)
        cache = model.allocate_cache(2, 19)
        parts = [model(ids[:, :6], past_key_values=cache).logits]
        parts += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(6, 19)]
    stepped = torch.cat(parts, dim=1)
    assert cache.length == 19
    rel = (stepped - full).abs().max() / full.abs().max()
    assert rel.item() <= 1e-4, rel.item()


@pytest.mark.parametrize("family", ["phi", "llama"])
def test_cached_greedy_equals_uncached_recomputation(family):
    model = make(family)
    ids = prompt(2, 5)
    new = model.generate(ids, max_new_tokens=8, pad_token_id=0)
    assert new.shape == (2, 8)  # only the new tokens
    seq = ids
    with torch.no_grad():
        for _ in range(8):  # reference: argmax of a full forward each step
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(new, seq[:, 5:])


@pytest.mark.parametrize("family", ["phi", "llama"])
def test_left_padded_batch_equals_rows_alone(family):
    model = make(family)
    rows = [prompt(1, 7)[0], prompt(1, 3)[0], prompt(1, 5)[0]]
    width = max(len(r) for r in rows)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
    batch = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=6).sequences
    for i, row in enumerate(rows):
        alone = generate_tokens(model, row[None], max_new_tokens=6).sequences
        assert torch.equal(batch[i], alone[0]), i


def brute_force_score(model, ids, new):
    """sum log p(new | ids) / len(new) from one full forward (length penalty 1)."""
    seq = torch.cat([ids, new])[None]
    with torch.no_grad():
        logp = F.log_softmax(model(seq).logits[0].float(), dim=-1)  # (L, V)
    p = len(ids)
    return sum(logp[p - 1 + t, tok].item() for t, tok in enumerate(new.tolist())) / len(new)


def reference_beams(model, ids, num_beams, steps):
    """Beam search by full recomputation (no cache, no eos): the num_beams best running sums each step;
    returns every final beam as (sum / steps, tokens)."""
    beams = [(0.0, [])]
    for _ in range(steps):
        candidates = []
        for total, toks in beams:
            with torch.no_grad():
                logits = model(torch.cat([ids, torch.tensor(toks, dtype=torch.long)])[None]).logits[0, -1]
            logp = F.log_softmax(logits.float(), dim=-1)
            candidates += [(total + logp[v].item(), toks + [v]) for v in range(VOCAB)]
        beams = sorted(candidates, key=lambda c: -c[0])[:num_beams]
    return [(total / steps, toks) for total, toks in beams]


def test_beam_search():
    model = make("phi")
    ids = prompt(2, 6)
    greedy = generate_tokens(model, ids, max_new_tokens=5).sequences
    one_beam = generate_tokens(model, ids, max_new_tokens=5, num_beams=1).sequences
    assert torch.equal(one_beam, greedy)
    beams = generate_tokens(model, ids, max_new_tokens=5, num_beams=3)
    for b in range(2):
        score = brute_force_score(model, ids[b], beams.sequences[b])
        assert abs(score - beams.scores[b].item()) < 1e-4
        finals = reference_beams(model, ids[b], 3, 5)
        best_score, best_tokens = max(finals, key=lambda f: f[0])
        assert beams.sequences[b].tolist() == best_tokens  # the highest-scoring final beam
        assert score >= max(f[0] for f in finals) - 1e-5


def test_beam_search_finishes_at_eos():
    model = make("llama")
    ids = prompt(1, 6)
    free = generate_tokens(model, ids, max_new_tokens=6, num_beams=3).sequences[0]
    eos = int(free[2])  # make the third token of the best free beam an eos
    out = generate_tokens(model, ids, max_new_tokens=6, num_beams=3, eos_token_id=eos, pad_token_id=0)
    seq = out.sequences[0]
    assert eos in seq.tolist()
    first = seq.tolist().index(eos)
    assert (seq[first + 1 :] == 0).all()
    assert abs(brute_force_score(model, ids[0], seq[: first + 1]) - out.scores[0].item()) < 1e-4


def test_eos_stops_a_row_and_pads_it():
    model = make("phi")
    ids = prompt(2, 6)
    free = generate_tokens(model, ids, max_new_tokens=8).sequences
    eos = int(free[0, 2])
    out = generate_tokens(model, ids, max_new_tokens=8, eos_token_id=eos, pad_token_id=VOCAB - 1).sequences
    for row in range(2):
        expected = free[row].tolist()
        if eos in expected:
            cut = expected.index(eos) + 1
            expected = expected[:cut] + [VOCAB - 1] * (len(expected) - cut)
        got = out[row].tolist()
        assert got == expected[: len(got)]
    assert out[0, 2] == eos and (out[0, 3:] == VOCAB - 1).all()
    both = generate_tokens(model, ids[:1], max_new_tokens=8, eos_token_id=eos).sequences
    assert both.shape == (1, 3)  # every row finished: the loop stops early


def test_sampling_is_reproducible_with_a_generator():
    model = make("llama")
    ids = prompt(2, 5)

    def sample(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return model.generate(ids, do_sample=True, temperature=1.5, max_new_tokens=10, generator=gen,
                              **kw)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))
    greedy = model.generate(ids, max_new_tokens=10)
    assert torch.equal(sample(3, top_p=1e-6), greedy)  # nucleus of one token = greedy


def test_inputs_embeds_and_hf_kwargs():
    model = make("phi")
    ids = prompt(2, 5)
    mask = torch.ones_like(ids)
    by_ids = model.generate(ids, attention_mask=mask, max_new_tokens=4, use_cache=True, position_ids=None)
    embeds = model.get_input_embeddings()(ids)
    by_embeds = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=4)
    assert torch.equal(by_ids, by_embeds)
    model.config.eos_token_id = int(by_ids[0, 1])  # no eos given: the config's eos stops row 0
    assert model.generate(ids, max_new_tokens=4, pad_token_id=0)[0, 2:].eq(0).all()
    with pytest.raises(NotImplementedError, match="logits_processor"):
        model.generate(ids, max_new_tokens=2, logits_processor=[lambda ids, scores: scores])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["phi", "llama"])
def test_half_precision_forward_and_generate_on_cpu(family, dtype):
    model = make(family, dtype)
    ids = prompt(2, 6)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert logits.dtype == dtype and torch.isfinite(logits[mask.bool()]).all()
    new = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=5, num_beams=2).sequences
    assert new.shape == (2, 5)
    cache = model.allocate_cache(2, 12)
    assert cache.ssm[0].ssm.dtype == torch.float32 and cache.kv[1][0].dtype == dtype


def test_mamba_state_is_constant_and_kv_grows_only_by_allocation():
    model = make("phi")
    config = model.config
    cache = model.allocate_cache(1, 80)
    with torch.no_grad():
        logits = model.next_token_logits(input_ids=prompt(1, 8), cache=cache)
        sizes = {}
        for step in range(64):
            logits = model.next_token_logits(input_ids=logits.argmax(-1, keepdim=True), cache=cache)
            if step + 1 in (8, 64):
                sizes[step + 1] = cache.nbytes()
    assert cache.length == 72
    assert sizes[8] == sizes[64]
    kv_per_token = 2 * 2 * 4 * 16 * 4  # K and V, 2 attention layers, 4 kv heads x 16, fp32
    assert sizes[64]["kv"] == 80 * kv_per_token
    conv_dim = 3 * 64  # x | B | C with d_state = head_dim and no GQA
    assert sizes[64]["conv"] == 2 * conv_dim * config.mamba_d_conv * 4
    assert sizes[64]["ssm"] == 2 * 4 * 16 * 16 * 4
    bigger = HybridCache(config, 1, 160, dtype=torch.float32).nbytes()
    assert bigger["kv"] == 2 * sizes[64]["kv"] and bigger["ssm"] == sizes[64]["ssm"]
    with pytest.raises(ValueError, match="max_length"):
        model.next_token_logits(input_ids=prompt(1, 9), cache=cache)
