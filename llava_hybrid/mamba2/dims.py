"""The sizes of one Mamba-2 mixer, written once: the packed in_proj layout, the conv channels, the states.

With attention's names (MaTVLM reads the mixer as linear attention: x ~ V, B ~ K, C ~ Q):

    d_inner  = n_heads * head_dim       z gate and the SSM output y
    d_xb     = n_kv_heads * head_dim    x (values), one block per kv head, repeated to the heads (GQA)
    d_B      = n_kv_heads * d_state     B (keys), likewise per kv head
    d_C      = n_heads * d_state        C (queries), per head
    conv_dim = d_xb + d_B + d_C         channels of the depthwise causal conv over x|B|C

    in_proj rows  [ z (d_inner) | x (d_xb) | B (d_B) | C (d_C) | dt (n_heads) ]   = d_inner + conv_dim + n_heads
    conv state    (batch, conv_dim, d_conv)              model dtype
    ssm state     (batch, n_heads, head_dim, d_state)    fp32

Parameters (mamba_ssm Mamba2 names, expand 1, ngroups = n_heads): in_proj (d_in_proj, d_model) [+ bias],
conv1d (conv_dim, 1, d_conv) + bias, dt_bias / A_log / D (n_heads,), norm weight (d_inner,),
out_proj (d_model, d_inner) [+ bias].

The mixer (mamba2/mixer.py), the Eq. 6 initialiser (hybrid/init.py), the decode cache (hybrid/cache.py)
and the bandwidth bound (bench/bound.py) all read these numbers from a `Mamba2Dims`.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Mamba2Dims"]


@dataclass(frozen=True)
class Mamba2Dims:
    """Sizes of one Mamba-2 mixer (see the module docstring); validated at construction."""

    d_model: int
    n_heads: int
    head_dim: int
    n_kv_heads: int
    d_state: int
    d_conv: int = 4

    def __post_init__(self):
        for name in ("d_model", "n_heads", "head_dim", "n_kv_heads", "d_state", "d_conv"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Mamba2 {name}={value!r} must be an integer >= 1")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"Mamba2 n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")

    @classmethod
    def of(cls, d_model: int, n_heads: int, head_dim: int, n_kv_heads: int | None = None,
           d_state: int | None = None, d_conv: int = 4) -> "Mamba2Dims":
        """The mixer's defaults filled in: n_kv_heads = n_heads (no GQA), d_state = head_dim (MaTVLM)."""
        return cls(d_model, n_heads, head_dim, n_heads if n_kv_heads is None else n_kv_heads,
                   head_dim if d_state is None else d_state, d_conv)

    @property
    def d_inner(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def d_xb(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def d_B(self) -> int:
        return self.n_kv_heads * self.d_state

    @property
    def d_C(self) -> int:
        return self.n_heads * self.d_state

    @property
    def conv_dim(self) -> int:
        return self.d_xb + self.d_B + self.d_C

    @property
    def d_in_proj(self) -> int:
        return self.d_inner + self.conv_dim + self.n_heads

    @property
    def heads_per_kv(self) -> int:
        """Query heads reading each kv head's x and B (head i reads kv head i // heads_per_kv)."""
        return self.n_heads // self.n_kv_heads

    @property
    def in_proj_sizes(self) -> dict[str, int]:
        """Row counts of in_proj's packed output, in order: z, x, B, C, dt."""
        return {"z": self.d_inner, "x": self.d_xb, "B": self.d_B, "C": self.d_C, "dt": self.n_heads}

    @property
    def in_proj_layout(self) -> dict[str, slice]:
        """Row ranges of in_proj's packed output, in order: z, x, B, C, dt."""
        layout, start = {}, 0
        for name, size in self.in_proj_sizes.items():
            layout[name] = slice(start, start + size)
            start += size
        return layout

    def conv_state_shape(self, batch: int) -> tuple[int, int, int]:
        """(batch, conv_dim, d_conv): the last d_conv inputs of the conv."""
        return (batch, self.conv_dim, self.d_conv)

    def ssm_state_shape(self, batch: int) -> tuple[int, int, int, int]:
        """(batch, n_heads, head_dim, d_state): the SSM state, kept in fp32."""
        return (batch, self.n_heads, self.head_dim, self.d_state)

    def state_bytes(self, conv_dtype_bytes: int) -> int:
        """Bytes of one sequence's decode state: conv in the model dtype + ssm in fp32."""
        conv = self.conv_dim * self.d_conv * conv_dtype_bytes
        ssm = self.n_heads * self.head_dim * self.d_state * 4
        return conv + ssm

    def param_count(self, bias: bool = False, conv_bias: bool = True) -> int:
        """Parameters of one mixer: in_proj, conv1d, dt_bias, A_log, D, norm, out_proj (+ biases)."""
        in_proj = self.d_model * self.d_in_proj + (self.d_in_proj if bias else 0)
        conv = self.conv_dim * self.d_conv + (self.conv_dim if conv_bias else 0)
        out_proj = self.d_inner * self.d_model + (self.d_model if bias else 0)
        return in_proj + conv + 3 * self.n_heads + self.d_inner + out_proj
