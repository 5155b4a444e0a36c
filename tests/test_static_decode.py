"""The static decode step: eager, under torch.compile(fullgraph=True) and replayed from a CUDA graph, it gives
the tokens of the eager loop (teacher, hybrids, left-padded batches, beams, sampling), and one compilation
serves a whole generation and every context length (dynamo's own counters)."""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from llava_hybrid.hybrid import (HybridLlamaConfig, HybridLlamaForCausalLM, HybridPhiConfig, HybridPhiForCausalLM,
                                 generate_tokens)
from llava_hybrid.hybrid.layers import positions_from_mask

VOCAB = 61
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            mamba_chunk_size=4, initializer_range=0.3)  # spread logits: greedy tokens vary, no near-ties


def make(family="phi", mamba_layers=(1, 3), device="cpu"):
    torch.manual_seed(0)
    if family == "phi":
        model = HybridPhiForCausalLM(HybridPhiConfig(**TINY, partial_rotary_factor=0.5, mamba_layers=list(mamba_layers)))
    else:  # GQA and d_state != head_dim
        model = HybridLlamaForCausalLM(HybridLlamaConfig(**TINY, num_key_value_heads=2, mamba_d_state=8,
                                                         mamba_layers=list(mamba_layers)))
    model.config.eos_token_id = None
    return model.to(device).eval()


def left_padded(lengths, device="cpu", seed=1):
    """Rows of the given lengths, left-padded to the longest: ids, attention_mask (B, P)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n:] = torch.randint(0, VOCAB, (n,), generator=gen)
        mask[i, width - n:] = 1
    return ids.to(device), mask.to(device)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_inductor_compiled_hybrid_gives_the_eager_tokens_with_one_compilation(fresh_dynamo):
    model = make("phi")
    counter = CompileCounterWithBackend("inductor")
    for lengths, new in (((7, 4), 12), ((11, 9), 20)):  # two context lengths, left-padded rows
        ids, mask = left_padded(lengths)
        eager = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new).sequences
        compiled = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new, compile=counter).sequences
        assert len(set(eager.flatten().tolist())) > 4  # a real sequence, not one repeated token
        assert torch.equal(compiled, eager), (lengths, compiled, eager)
    assert counter.frame_count == 1  # one graph for every step of both generations, no recompile


@pytest.mark.parametrize("family,mamba_layers", [("phi", ()), ("llama", (0, 2))], ids=["teacher", "llama_gqa"])
def test_compiled_step_is_one_graph_for_teacher_and_gqa_hybrid(fresh_dynamo, family, mamba_layers):
    model = make(family, mamba_layers)
    counter = CompileCounterWithBackend("aot_eager")  # dynamo + AOT autograd, without code generation
    for lengths, new in (((6, 3, 5), 9), ((13, 13, 2), 15)):
        ids, mask = left_padded(lengths, seed=len(lengths) + new)
        eager = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new).sequences
        compiled = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new, compile=counter).sequences
        assert torch.equal(compiled, eager)
    assert counter.frame_count == 1


def test_compiled_step_under_beams_sampling_and_eos(fresh_dynamo):
    model = make("llama", (1,))
    ids, mask = left_padded((6, 4))
    counter = CompileCounterWithBackend("aot_eager")

    def both(seed=None, **kw):  # a sampling run gets its own generator, seeded alike
        gen = lambda: None if seed is None else torch.Generator().manual_seed(seed)  # noqa: E731
        eager = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=8, generator=gen(), **kw)
        compiled = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=8, compile=counter,
                                   generator=gen(), **kw)
        return eager.sequences, compiled.sequences

    eager, compiled = both(num_beams=3)  # the cache, positions and key mask reordered in place between steps
    assert torch.equal(compiled, eager)
    eager, compiled = both(seed=5, do_sample=True, temperature=1.3, top_p=0.9)
    assert torch.equal(compiled, eager)
    assert not torch.equal(eager, both(seed=6, do_sample=True, temperature=1.3, top_p=0.9)[0])
    free = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=8).sequences
    eos = int(free[0, 2])
    eager, compiled = both(eos_token_id=eos, pad_token_id=0)
    assert torch.equal(compiled, eager) and eager[0, 2] == eos


def test_a_prefill_after_a_static_decode_continues_the_sequence():
    model = make("phi")
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids).logits  # (B, 12, V)
        cache = model.allocate_cache(2, 12)
        model(ids[:, :5], past_key_values=cache)
        cache.start_decode()
        positions = positions_from_mask(torch.ones(2, 5, dtype=torch.long))[:, -1:] + 1
        stepped = []
        for t in range(5, 9):  # four static steps
            stepped.append(model.decode_step(ids[:, t], positions, cache))
            positions.add_(1)
        cache.finish_decode()
        assert cache.length == 9 and all(s.seen_tokens == 9 for s in cache.ssm.values())
        rest = model(ids[:, 9:], past_key_values=cache).logits  # the dynamic path again: 3 tokens
    torch.testing.assert_close(torch.stack(stepped, 1), full[:, 5:9], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rest, full[:, 9:], rtol=1e-4, atol=1e-4)


def test_cuda_graph_is_refused_off_cuda_and_without_a_cache():
    model = make("phi")
    ids = torch.randint(0, VOCAB, (1, 4))
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on CUDA"):
        generate_tokens(model, ids, max_new_tokens=3, cuda_graph=True)
    with pytest.raises(ValueError, match="use_cache=False"):
        generate_tokens(model, ids, max_new_tokens=3, compile=True, use_cache=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mamba_layers", [(), (1, 3)], ids=["teacher", "hybrid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_replay_gives_the_eager_tokens(mamba_layers, dtype):
    model = make("phi", mamba_layers, device="cuda").to(dtype)
    for lengths, new in (((7, 4), 16), ((30, 30, 12, 1), 40)):  # capture per generation and batch size
        ids, mask = left_padded(lengths, device="cuda")
        eager = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new).sequences
        replayed = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new, cuda_graph=True).sequences
        assert torch.equal(replayed, eager)
        eos = int(eager[0, 5])  # strided eos reads on CUDA stop at the same token as the eager loop
        eager = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new, eos_token_id=eos).sequences
        replayed = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=new, eos_token_id=eos,
                                   cuda_graph=True).sequences
        assert torch.equal(replayed, eager)
