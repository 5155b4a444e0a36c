"""The one prepared GPU check (see scripts/gpu_check.sh and llava_hybrid/bench/gpu_check.py): backend check,
decode speed and memory at Phi-2's shape, one distillation step at the paper's shape; everything under --out.

    python scripts/gpu_check.py --out $OUT                      # on the GPU (gpu_check.sh installs and calls this)
    python scripts/gpu_check.py --device cpu --smoke --out /tmp/gpu_check_smoke   # CPU rehearsal (CI), seconds
"""
import argparse
import sys
from pathlib import Path

import torch

from llava_hybrid.bench.gpu_check import environment, run_gpu_check


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for every JSON and PNG (at most 8 files)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes: a rehearsal of the whole script")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="decode rows that would start later than this are recorded as skipped")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here (--device cpu --smoke rehearses the script)", file=sys.stderr)
        return 2
    print(environment(), flush=True)
    torch.set_num_threads(1 if torch.device(args.device).type == "cpu" else torch.get_num_threads())
    summary = run_gpu_check(args.out, args.device, args.smoke, args.budget_s,
                            log=lambda line: print(line, flush=True))
    return 0 if summary["parts"]["cuda_backend"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
