"""Convert a TinyLLaVA_Factory checkpoint (e.g. tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B, the MaTVLM
teacher) into this project's LLaVA-layout `llava_phi` checkpoint, loadable by LLaVA's scripts.

    python scripts/convert_tinyllava_factory.py --src TinyLLaVA-Phi-2-SigLIP-3.1B --dst tinyllava-llava
"""
import argparse
import sys


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="local TinyLLaVA_Factory checkpoint directory")
    parser.add_argument("--dst", required=True, help="output directory (llava_phi checkpoint)")
    args = parser.parse_args(argv)
    from llava_hybrid.convert.factory import convert_factory_checkpoint
    out = convert_factory_checkpoint(args.src, args.dst)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
