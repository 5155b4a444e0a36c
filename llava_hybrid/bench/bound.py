"""The memory-bandwidth bound of decode speed, computed from a config alone (no model, no weights).

Decoding one token per row is memory-bandwidth bound at small batch: every step streams all the weights
once (shared by the batch) and, per row, the KV cache of every attention layer plus the fixed-size
state of every Mamba layer. So, per decode step at context length T (tokens already cached):

    bytes(T, B) = W + B * (n_attn * KV_token * T + n_mamba * S)

    W         bytes of the weights a step reads: every parameter except the embedding table, of which
              one row per sequence is read (B * hidden)
    KV_token  2 * kv_heads * head_dim * dtype bytes (K and V of one token in one layer)
    S         one Mamba layer's state: conv (conv_dim x d_conv, model dtype) + ssm (heads x head_dim x
              d_state, fp32 as llava_hybrid.hybrid.HybridCache keeps it)

and the fastest a model can decode relative to the teacher is bytes_teacher / bytes_hybrid (the
`bound_speed_ratio`). Phi-2 fp16 (upstream facts section 5): KV_token = 10,240 B; at T = 16K the bound
is ~1.06x / 1.13x / 1.30x for 12.5 / 25 / 50 % Mamba layers; as B grows W stops mattering and the bound
tends to n_layers / n_attn = 1 / (1 - ratio).
"""

from __future__ import annotations

import torch

from llava_hybrid.hybrid.configuration import head_dim_of, mamba_dims, model_family

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}


def dtype_bytes(dtype) -> int:
    """Bytes per element of a torch dtype or a name ("fp16", "bfloat16", ...)."""
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).element_size()
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; expected a torch.dtype or one of {sorted(_DTYPE_BYTES)}")
    return _DTYPE_BYTES[dtype]


def layer_param_counts(config) -> dict[str, int]:
    """Parameters of one decoder layer's parts: {"attention", "mamba", "mlp_norms"} (Phi or Llama layout)."""
    phi = model_family(config) == "phi"
    d, inter = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hd = head_dim_of(config)

    # attention: q (D -> H*hd), k, v (D -> KV*hd), output (H*hd -> D); Phi has biases on all four
    attention = d * heads * hd * 2 + d * kv_heads * hd * 2
    if phi:
        attention += heads * hd + 2 * kv_heads * hd + d
    # Mamba-2 mixer (the sizes of mamba2/dims.py)
    mamba = mamba_dims(config).param_count(bias=bool(getattr(config, "mamba_carry_bias", False)))
    # MLP and norms: Phi fc1/fc2 with biases + one LayerNorm; Llama gate/up/down + two RMSNorms
    if phi:
        mlp_norms = 2 * d * inter + inter + d + 2 * d
    else:
        mlp_norms = 3 * d * inter + 2 * d
    return {"attention": attention, "mamba": mamba, "mlp_norms": mlp_norms}


def param_count(config) -> int:
    """All parameters of the hybrid (or all-attention) causal LM described by `config`."""
    counts = layer_param_counts(config)
    d, vocab, n = config.hidden_size, config.vocab_size, config.num_hidden_layers
    n_mamba = len(getattr(config, "mamba_layers", None) or [])
    phi = model_family(config) == "phi"
    embed = vocab * d
    final_norm = 2 * d if phi else d
    lm_head = 0 if getattr(config, "tie_word_embeddings", False) else vocab * d
    lm_head += vocab if phi else 0  # Phi-2's lm_head has a bias
    layers = n * counts["mlp_norms"] + (n - n_mamba) * counts["attention"] + n_mamba * counts["mamba"]
    return embed + layers + final_norm + lm_head


def mamba_state_bytes(config, dtype) -> int:
    """One Mamba layer's decode state for one sequence: conv (model dtype) + ssm (fp32)."""
    return mamba_dims(config).state_bytes(dtype_bytes(dtype))


def kv_bytes_per_token(config, dtype) -> int:
    """K and V of one token in ONE attention layer: 2 * kv_heads * head_dim * dtype bytes."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * kv_heads * head_dim_of(config) * dtype_bytes(dtype)


def decode_bytes(config, context_len: int, batch: int = 1, dtype="fp16") -> dict[str, int]:
    """Bytes one decode step reads at `context_len` cached tokens for `batch` sequences.

    Returns {"weights", "kv", "mamba_state", "total"}; see the module docstring for the formula.
    """
    if context_len < 0 or batch < 1:
        raise ValueError(f"decode_bytes needs context_len >= 0 and batch >= 1, got {context_len}, {batch}")
    n = config.num_hidden_layers
    n_mamba = len(getattr(config, "mamba_layers", None) or [])
    size = dtype_bytes(dtype)
    streamed = param_count(config) - config.vocab_size * config.hidden_size  # the embedding table is not streamed
    weights = (streamed + batch * config.hidden_size) * size  # + one embedding row per sequence
    if getattr(config, "tie_word_embeddings", False):
        weights += config.vocab_size * config.hidden_size * size  # the tied table is read whole as lm_head
    kv = batch * (n - n_mamba) * kv_bytes_per_token(config, dtype) * context_len
    state = batch * n_mamba * mamba_state_bytes(config, dtype)
    return {"weights": weights, "kv": kv, "mamba_state": state, "total": weights + kv + state}


def bound_speed_ratio(hybrid_config, teacher_config, context_len: int, batch: int = 1, dtype="fp16") -> float:
    """Decode speed-up of `hybrid_config` over `teacher_config` that memory bandwidth alone allows at
    `context_len` cached tokens: teacher bytes per step / hybrid bytes per step."""
    teacher = decode_bytes(teacher_config, context_len, batch, dtype)["total"]
    return teacher / decode_bytes(hybrid_config, context_len, batch, dtype)["total"]


def run_bound_speed_ratio(hybrid_config, teacher_config, prompt_len: int, gen_len: int, batch: int = 1,
                          dtype="fp16") -> float:
    """The bound for a whole run (prompt_len cached, then gen_len decode steps): bytes are linear in the
    context length, so total teacher bytes / total hybrid bytes equals the ratio at the mean context
    length prompt_len + (gen_len - 1) / 2 (what a measured average tokens/s should be compared with)."""
    def total(config):
        first = decode_bytes(config, prompt_len, batch, dtype)["total"]
        last = decode_bytes(config, prompt_len + gen_len - 1, batch, dtype)["total"]
        return first + last  # the sum over the run is gen_len * (first + last) / 2

    return total(teacher_config) / total(hybrid_config)
