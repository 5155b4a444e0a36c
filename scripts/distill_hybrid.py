"""Single-stage MaTVLM distillation: `deepspeed scripts/distill_hybrid.py --deepspeed scripts/zero2.json ...`
or plain `python scripts/distill_hybrid.py ...`. Flags: llava_hybrid/distill/arguments.py, docs/distillation.md."""
from llava_hybrid.distill.trainer import main

if __name__ == "__main__":
    main()
