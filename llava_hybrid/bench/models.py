"""The models a decode benchmark compares: the teacher shape (all attention) and hybrids of the same shape,
random weights, plus the teacher's weights loaded into stock transformers `PhiForCausalLM`.

Shapes:
    phi2   Phi-2 (TinyLLaVA / MaTVLM's LM): hidden 2560, 32 layers, 32 heads x 80, MLP 10240, vocab 51200,
           partial rotary 0.4: the GPU benchmark.
    small  a scaled Phi for CPU: hidden 256, 8 layers, 4 heads x 64, MLP 1024, vocab 4096, partial rotary
           0.5. Per layer a step reads KV 2*L*D against weights ~12*D^2, so the KV/weights balance L / 6D at
           2K tokens (1.33) is Phi-2's at ~20K tokens.
    tiny   hidden 64, 4 layers, 4 heads x 16, vocab 97: tests.
"""

from __future__ import annotations

import torch
from transformers import PhiConfig, PhiForCausalLM

from llava_hybrid.compat import rope_settings, transformers_version
from llava_hybrid.hybrid import HybridPhiConfig, HybridPhiForCausalLM, plan_mamba_layers

SHAPES: dict[str, dict] = {
    "phi2": dict(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                 num_attention_heads=32, partial_rotary_factor=0.4),
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=8,
                  num_attention_heads=4, partial_rotary_factor=0.5),
    "tiny": dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, partial_rotary_factor=0.5),
}
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "layer_norm_eps", "hidden_act")  # what a stock PhiConfig copies (+ the rope settings)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def model_name(ratio: float) -> str:
    """"teacher" for ratio 0, else "hybrid-25%" etc."""
    return "teacher" if ratio == 0 else f"hybrid-{ratio * 100:g}%"


def shape_config(shape: str, ratio: float, max_positions: int = 2048, positions: str = "even") -> HybridPhiConfig:
    """HybridPhiConfig of a named shape with `ratio` of its layers Mamba-2 (plan_mamba_layers; 0 = teacher).

    eos/bos/pad are cleared: a benchmark generates exactly the number of tokens it asks for.
    """
    if shape not in SHAPES:
        raise ValueError(f"--shape {shape!r} is not one of {sorted(SHAPES)}")
    n = SHAPES[shape]["num_hidden_layers"]
    layers = plan_mamba_layers(n, ratio, positions) if ratio > 0 else []
    return HybridPhiConfig(**SHAPES[shape], max_position_embeddings=max(max_positions, 2048), mamba_layers=layers,
                           mamba_backend="auto", eos_token_id=None, bos_token_id=None, pad_token_id=None)


def build_model(config: HybridPhiConfig, device, dtype: torch.dtype, seed: int = 0) -> HybridPhiForCausalLM:
    """Random-weight project model in eval mode on `device` / `dtype` (weights drawn on the device)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = HybridPhiForCausalLM(config)
    return model.to(dtype).eval()


def transformers_phi_config(config: HybridPhiConfig) -> PhiConfig:
    """The same shape as a stock transformers PhiConfig (the Mamba fields dropped); needs mamba_layers=[]."""
    if config.mamba_layers:
        raise ValueError(f"stock transformers Phi has no Mamba layers; got mamba_layers={config.mamba_layers}")
    fields = {key: getattr(config, key) for key in SHAPE_FIELDS}
    theta, partial_rotary, _ = rope_settings(config)
    # SDPA where stock Phi has it (transformers >= 4.38; LLaVA's 4.37 pin runs Phi's eager attention)
    attention = {"attn_implementation": "sdpa"} if transformers_version() >= (4, 38, 0) else {}
    return PhiConfig(**fields, rope_theta=theta, partial_rotary_factor=partial_rotary,
                     max_position_embeddings=config.max_position_embeddings,
                     eos_token_id=None, bos_token_id=None, pad_token_id=None, **attention)



def to_transformers_phi(model: HybridPhiForCausalLM) -> PhiForCausalLM:
    """Stock `PhiForCausalLM` holding the same weights (names are equal; strict load), same device/dtype."""
    weight = model.get_input_embeddings().weight
    config = transformers_phi_config(model.config)
    with torch.device(weight.device):
        ref = PhiForCausalLM(config)
    ref = ref.to(weight.dtype).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    return ref


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of all parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
