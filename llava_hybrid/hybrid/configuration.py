"""Configs of the hybrid decoders: transformers' Phi / Llama configs plus the Mamba-2 layer plan.

Extra serialisable fields (same on both):
    mamba_layers: list[int]     decoder layers whose attention is a Mamba-2 mixer (sorted, unique, in range)
    mamba_d_state: int | None   SSM state size; None -> head_dim (MaTVLM: d_state = head_dim = 80)
    mamba_d_conv: int = 4       depthwise causal conv kernel
    mamba_chunk_size: int = 64  SSD chunk length (64 is fastest on CPU; the official runs used 256)
    mamba_backend: str = "auto" "auto" | "torch" | "cuda", see llava_hybrid.mamba2.backend
    mamba_carry_bias: bool = False  Mamba in_proj/out_proj get biases (to carry Phi's q/k/v/dense biases)

Works with transformers 5.x, where configs are dataclasses (fields are annotations, checks go in
`__post_init__`, rope settings live in `config.rope_parameters`), and with 4.x (LLaVA's pin), where
configs take keyword arguments in `__init__` and rope settings are attributes (llava_hybrid.compat
reads the version and the rope settings of both).
"""

from __future__ import annotations

from transformers import LlamaConfig, PhiConfig

from llava_hybrid.compat import configs_are_dataclasses

from llava_hybrid.mamba2.backend import BACKENDS as MAMBA_BACKENDS
from llava_hybrid.mamba2.dims import Mamba2Dims

from .plan import layer_pattern

_HYBRID_DEFAULTS = dict(
    mamba_layers=None,
    mamba_d_state=None,
    mamba_d_conv=4,
    mamba_chunk_size=64,
    mamba_backend="auto",
    mamba_carry_bias=False,
)


def model_family(config) -> str:
    """'phi' or 'llama' by config class (the hybrid and LLaVA configs subclass transformers' ones).

    The two families the hybrid decoders implement; never read from a name. ValueError otherwise.
    """
    if isinstance(config, PhiConfig):
        return "phi"
    if isinstance(config, LlamaConfig):
        return "llama"
    raise ValueError(f"{type(config).__name__} (model_type {getattr(config, 'model_type', None)!r}) is neither a "
                     "PhiConfig nor a LlamaConfig: the hybrid decoders exist for these two families")


def head_dim_of(config) -> int:
    """Per-head width: config.head_dim when set (Llama 5.x), else hidden_size // num_attention_heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def mamba_dims(config) -> Mamba2Dims:
    """Sizes of the Mamba-2 mixer that replaces a layer's attention: its heads, kv heads and head_dim,
    d_state = config.mamba_d_state or head_dim, d_conv = config.mamba_d_conv (4 for a plain teacher config)."""
    heads = config.num_attention_heads
    return Mamba2Dims.of(config.hidden_size, heads, head_dim_of(config),
                         n_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                         d_state=getattr(config, "mamba_d_state", None), d_conv=getattr(config, "mamba_d_conv", 4))


def layer_plan_line(num_layers: int, mamba_layers) -> str:
    """The line every training run prints first: its layer pattern (Megatron's symbols) and Mamba indices,
    e.g. 'layer plan: M***M*** (M = Mamba-2 at [0, 4], * = attention; 8 decoder layers)'."""
    layers = sorted(int(i) for i in mamba_layers or [])
    return (f"layer plan: {layer_pattern(num_layers, layers)} (M = Mamba-2 at {layers}, * = attention; "
            f"{num_layers} decoder layers)")


def check_hybrid_config(config) -> None:
    """Validate the Mamba fields once (at config creation and again when a model is built from it).

    Normalises `mamba_layers` to a list of ints. Raises ValueError naming the field and the bad value.
    """
    layers = config.mamba_layers
    layers = [] if layers is None else list(layers)
    n = config.num_hidden_layers
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(f"config.mamba_layers must hold ints, got {layers}")
    if any(not 0 <= i < n for i in layers):
        raise ValueError(f"config.mamba_layers {layers} has indices outside 0..{n - 1} (num_hidden_layers={n})")
    if len(set(layers)) != len(layers):
        raise ValueError(f"config.mamba_layers {layers} has repeated indices")
    if layers != sorted(layers):
        raise ValueError(f"config.mamba_layers {layers} must be sorted ascending")
    if config.mamba_backend not in MAMBA_BACKENDS:
        raise ValueError(f"config.mamba_backend must be one of {MAMBA_BACKENDS}, got {config.mamba_backend!r}")
    if config.mamba_d_conv < 1 or config.mamba_chunk_size < 1:
        raise ValueError(
            f"config.mamba_d_conv ({config.mamba_d_conv}) and config.mamba_chunk_size "
            f"({config.mamba_chunk_size}) must be positive"
        )
    config.mamba_layers = layers


class _HybridFields:
    """The Mamba fields and their check, shared by both configs (a mixin before the HF config)."""

    if configs_are_dataclasses():
        # transformers 5.x turns these annotations into dataclass fields of the subclass.
        mamba_layers: list[int] | None = None
        mamba_d_state: int | None = None
        mamba_d_conv: int = 4
        mamba_chunk_size: int = 64
        mamba_backend: str = "auto"
        mamba_carry_bias: bool = False

        def __post_init__(self, **kwargs):
            super().__post_init__(**kwargs)
            check_hybrid_config(self)

    else:

        def __init__(self, **kwargs):
            hybrid = {key: kwargs.pop(key, default) for key, default in _HYBRID_DEFAULTS.items()}
            super().__init__(**kwargs)
            for key, value in hybrid.items():
                setattr(self, key, value)
            check_hybrid_config(self)

    @property
    def attention_layers(self) -> list[int]:
        """Indices of the layers that keep attention (the complement of mamba_layers)."""
        chosen = set(self.mamba_layers)
        return [i for i in range(self.num_hidden_layers) if i not in chosen]


class HybridPhiConfig(_HybridFields, PhiConfig):
    """Phi config + Mamba-2 layer plan; model_type "hybrid_phi"."""

    model_type = "hybrid_phi"


class HybridLlamaConfig(_HybridFields, LlamaConfig):
    """Llama-family (LLaVA-1.5 / Vicuna, SmolLM2) config + Mamba-2 layer plan; model_type "hybrid_llama"."""

    model_type = "hybrid_llama"
