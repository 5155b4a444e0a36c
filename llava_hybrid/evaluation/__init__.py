"""Evaluation as researchers run it: the paper's benchmarks in LLaVA's launcher style.

    scripts/eval/<bench>.sh   LLaVA's model_vqa* scripts (unchanged, sharded over CUDA_VISIBLE_DEVICES),
                              merge, then the benchmark's own converter / scorer from this package
    mme, llava_scorers (pope, textvqa, sqa), gqa, vqav2, mmbench, mmvet, mmmu, mmstar
                              one module per benchmark: its data layout, conversion and scoring rule
    table                     the Table-1-style row from the score files
    smoke                     tiny deterministic copies of every benchmark's input format (labelled smoke)
    lmms                      the lmms-eval model (entry point `lmms_eval.models`: llava_hybrid)
"""
