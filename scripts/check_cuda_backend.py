"""Check the Mamba-2 mixer's `cuda` path against its PyTorch path, forward and backward, per dtype.

The `cuda` op table (llava_hybrid.mamba2.backend) runs mamba_ssm's Triton SSD scan, its Triton state update
and gated norm, and causal_conv1d's conv when that package imports (the project's PyTorch conv otherwise).
At Phi-2's MaTVLM mixer shape (d_model 2560, 32 heads x 80, d_state 80), identical weights and inputs:
    forward      y = mixer(x) over `--length` tokens (the chunked scan; padding on one row)
    backward     the gradient of mean(y^2) w.r.t. the input and every parameter
    decode       a prefill of length - 8 tokens, then 8 one-token steps (state update), outputs and final states
each as a relative error ||cuda - torch|| / ||torch||, against a tolerance per dtype (fp32 2e-3, bf16 3e-2:
the two paths round at different places). Writes one JSON (device, versions, which conv ran, how mamba_ssm was
imported, the errors, pass/fail); exits 1 if any error is over its tolerance, 2 if the kernels cannot run.

    python scripts/check_cuda_backend.py --out cuda_backend.json              # on a GPU, the gpu extra installed
    python scripts/check_cuda_backend.py --device cpu --smoke --out x.json    # CPU rehearsal (CI): the same
        comparison with the `torch` table against a torch table whose scan runs chunks a quarter as long
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from llava_hybrid.mamba2 import Mamba2Mixer, TORCH_OPS, ssd_chunked
from llava_hybrid.mamba2 import backend as mamba_backend

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {"fp32": 2e-3, "bf16": 3e-2, "fp16": 1e-2}
DECODE_STEPS = 8


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def candidate_table(device: str):
    """The table under test: the CUDA kernels on CUDA; on CPU (rehearsal) the torch table with chunks a
    quarter as long (other chunk boundaries, the same result up to rounding)."""
    if torch.device(device).type == "cuda":
        return mamba_backend.cuda_ops()

    def short_chunks(x, dt, A, B, C, chunk_size, D=None, initial_state=None):
        return ssd_chunked(x, dt, A, B, C, max(1, chunk_size // 4), D, initial_state)

    return dataclasses.replace(TORCH_OPS, name="torch-short-chunks", scan=short_chunks)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare(args: argparse.Namespace, dtype_name: str) -> dict:
    """torch vs candidate table on identical weights and inputs: errors, tolerance, timings."""
    dtype, device = DTYPES[dtype_name], args.device
    torch.manual_seed(0)
    kw = dict(d_model=args.d_model, n_heads=args.heads, head_dim=args.head_dim, chunk_size=args.chunk_size,
              device=device, dtype=dtype)
    ref = Mamba2Mixer(backend="torch", **kw)
    fast = Mamba2Mixer(backend=candidate_table(device), **kw)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(args.batch, args.length, args.d_model, device=device, dtype=dtype)
    mask = torch.ones(args.batch, args.length, dtype=torch.long, device=device)
    mask[0, : args.length // 8] = 0  # left padding on one row: the masked path of both tables
    out, grads, secs = {}, {}, {}
    for name, m in (("torch", ref), ("candidate", fast)):
        xi = x.clone().requires_grad_()
        _sync(device)
        t0 = time.perf_counter()
        y = m(xi, attention_mask=mask)
        y.float().square().mean().backward()
        _sync(device)
        secs[name] = time.perf_counter() - t0
        out[name] = y.detach()
        grads[name] = {"input": xi.grad, **{k: p.grad for k, p in m.named_parameters()}}
    steps, states = {}, {}
    with torch.no_grad():
        for name, m in (("torch", ref), ("candidate", fast)):
            state = m.allocate_state(args.batch)
            m(x[:, : -DECODE_STEPS], state=state)
            steps[name] = torch.cat([m(x[:, t: t + 1], state=state)
                                     for t in range(args.length - DECODE_STEPS, args.length)], dim=1)
            states[name] = state
    errors = {
        "forward": rel_err(out["candidate"], out["torch"]),
        **{f"backward_{k}": rel_err(grads["candidate"][k], grads["torch"][k]) for k in grads["torch"]},
        "decode_steps": rel_err(steps["candidate"], steps["torch"]),
        "decode_ssm_state": rel_err(states["candidate"].ssm, states["torch"].ssm),
        "decode_conv_state": rel_err(states["candidate"].conv, states["torch"].conv),
    }
    worst = max(errors, key=errors.get)
    return {"errors": errors, "tolerance": TOLERANCE[dtype_name], "worst": worst,
            "passed": errors[worst] <= TOLERANCE[dtype_name], "fwd_bwd_seconds_first_call": secs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a rehearsal of the script)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (seconds): d_model 64, 4 heads x 16, L 80")
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=2560)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=80)
    ap.add_argument("--chunk-size", type=int, default=64, help="power of two (Triton)")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--out", type=Path, default=Path("cuda_backend_check.json"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.length, args.d_model, args.heads, args.head_dim, args.chunk_size = 80, 64, 4, 16, 16
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: no CUDA device (use --device cpu for the rehearsal)", file=sys.stderr)
        return 2
    if cuda and mamba_backend.cuda_import_error() is not None:
        print(f"CUDA kernels unavailable ({mamba_backend.cuda_import_error()}); {mamba_backend.INSTALL_HINT}",
              file=sys.stderr)
        return 2
    mamba_ssm = sys.modules.get("mamba_ssm")
    result = {
        "what": "Mamba-2 mixer: cuda op table vs torch op table" if cuda else
                "CPU rehearsal: torch op table vs torch table with chunks a quarter as long",
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "conv": mamba_backend.cuda_conv_source if cuda else "torch",
        "mamba_ssm": None if mamba_ssm is None else {
            "file": getattr(mamba_ssm, "__file__", None) or list(getattr(mamba_ssm, "__path__", [])),
            "package_init_run": getattr(mamba_ssm, "__file__", None) is not None,
            "version": getattr(mamba_ssm, "__version__", None)},
        "shape": {"batch": args.batch, "length": args.length, "d_model": args.d_model, "heads": args.heads,
                  "head_dim": args.head_dim, "chunk_size": args.chunk_size, "decode_steps": DECODE_STEPS},
        "results": {},
    }
    for name in args.dtypes:
        r = compare(args, name)
        result["results"][name] = r
        e = r["errors"]
        print(f"{name}: forward {e['forward']:.2e}  backward (worst) "
              f"{max(v for k, v in e.items() if k.startswith('backward')):.2e}  decode {e['decode_steps']:.2e}  "
              f"-> {'ok' if r['passed'] else 'FAILED'} (tolerance {r['tolerance']:g}, worst {r['worst']})")
    result["passed"] = all(r["passed"] for r in result["results"].values())
    print(f"device: {result['device']}; conv: {result['conv']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
