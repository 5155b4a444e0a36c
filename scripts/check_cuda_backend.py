"""Check the `cuda` Mamba-2 backend (mamba_ssm + causal_conv1d) against the project's `torch` path
on a GPU, at Phi-2's MaTVLM mixer shape: forward, backward (input and every parameter gradient) and
one decode step, per dtype. Prints and writes JSON with the device name and the relative errors.

    python scripts/check_cuda_backend.py --length 2048 --out cuda_check.json
Needs a CUDA GPU and `pip install -e .[gpu]`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from llava_hybrid.mamba2 import Mamba2Mixer
from llava_hybrid.mamba2.backend import cuda_import_error

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def compare(args: argparse.Namespace, dtype: torch.dtype) -> dict:
    """Torch vs cuda backend on identical weights and inputs; errors and timings."""
    torch.manual_seed(0)
    kw = dict(d_model=args.d_model, n_heads=args.heads, head_dim=args.head_dim, chunk_size=args.chunk_size,
              device="cuda", dtype=dtype)
    ref = Mamba2Mixer(backend="torch", **kw)
    fast = Mamba2Mixer(backend="cuda", **kw)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(args.batch, args.length, args.d_model, device="cuda", dtype=dtype)
    out, grads, secs = {}, {}, {}
    for name, m in (("torch", ref), ("cuda", fast)):
        xi = x.clone().requires_grad_()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = m(xi)
        y.float().square().mean().backward()
        torch.cuda.synchronize()
        secs[name] = time.perf_counter() - t0
        out[name] = y.detach()
        grads[name] = {"input": xi.grad, **{k: p.grad for k, p in m.named_parameters()}}
    with torch.no_grad():
        steps = {}
        for name, m in (("torch", ref), ("cuda", fast)):
            state = m.allocate_state(args.batch)
            m(x[:, :-1], state=state)
            steps[name] = m(x[:, -1:], state=state)
    return {
        "forward_rel_err": rel_err(out["cuda"].float(), out["torch"].float()),
        "backward_rel_err": {k: rel_err(grads["cuda"][k].float(), grads["torch"][k].float()) for k in grads["torch"]},
        "decode_step_rel_err": rel_err(steps["cuda"].float(), steps["torch"].float()),
        "fwd_bwd_seconds_first_call": secs,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=2560)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=80)
    ap.add_argument("--chunk-size", type=int, default=64, help="power of two (Triton)")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--out", type=Path, default=Path("cuda_backend_check.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    if cuda_import_error() is not None:
        print(f"CUDA kernels unavailable ({cuda_import_error()}); pip install -e .[gpu]", file=sys.stderr)
        return 2
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "shape": {"batch": args.batch, "length": args.length, "d_model": args.d_model, "heads": args.heads,
                  "head_dim": args.head_dim, "chunk_size": args.chunk_size},
        "results": {},
    }
    for name in args.dtypes:
        r = compare(args, DTYPES[name])
        result["results"][name] = r
        worst = max(r["backward_rel_err"].values())
        print(f"{name}: forward {r['forward_rel_err']:.2e}  backward (worst) {worst:.2e}  "
              f"decode {r['decode_step_rel_err']:.2e}")
    print(f"device: {result['device']}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
