"""A distillation step against a plain SFT step of the same student, on CPU (target: <= 1.5x).

    .venv/bin/python scripts/bench_distill.py                     # shipped easy-VQA teacher, 25 % student
    .venv/bin/python scripts/bench_distill.py --teacher <dir> --ratio 0.5 --batch-size 16
Writes docs/benchmarks/distill_step_cpu.json (see docs/benchmarks.md).
"""
import argparse
import json

from llava_hybrid.bench.distill_step import DistillStepSpec, run_distill_step_benchmark, write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="playground/easyvqa/teacher", help="LLaVA teacher checkpoint dir")
    p.add_argument("--data-dir", default="playground/data/easyvqa", help="easy-VQA in LLaVA layout (made if missing)")
    p.add_argument("--ratio", type=float, default=0.25, help="--mm_hybrid_ratio of the student")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timer", default="cpu", choices=["cpu", "wall"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/benchmarks/distill_step_cpu.json")
    a = p.parse_args()
    result = run_distill_step_benchmark(DistillStepSpec(
        teacher=a.teacher, data_dir=a.data_dir, ratio=a.ratio, batch_size=a.batch_size, rounds=a.rounds,
        warmup=a.warmup, timer=a.timer, threads=a.threads))
    write_result(result, a.out)
    keys = ("sft_step_s", "distill_step_s", "ratio_distill_over_sft", "distill_separate_twin_step_s",
            "ratio_separate_twin_over_sft", "samples_per_s_sft",
            "samples_per_s_distill", "teacher_share_of_distill_step")
    print(json.dumps({k: round(result[k], 4) for k in keys}, indent=2))


if __name__ == "__main__":
    main()
