"""Convert the official MaTVLM release (e.g. hustvl/MaTVLM_0_25_Mamba2: TinyLLaVA_Factory layout with
`language_model.model.layers.{i}.mamba.*` weights and mamba_config.json) into this project's
`llava_hybrid_phi` checkpoint, loadable by LLaVA's scripts (`load_pretrained_model`).

    python scripts/convert_matvlm.py --src MaTVLM_0_25_Mamba2 --dst matvlm-0.25-llava
"""
import argparse
import sys


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="local MaTVLM release directory (config.json, "
                                                     "mamba_config.json, *.safetensors, tokenizer files)")
    parser.add_argument("--dst", required=True, help="output directory (llava_hybrid_phi checkpoint)")
    args = parser.parse_args(argv)
    from llava_hybrid.convert.matvlm import convert_matvlm_checkpoint

    out = convert_matvlm_checkpoint(args.src, args.dst)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
