"""The prepared GPU check (scripts/gpu_check.sh -> scripts/gpu_check.py) rehearsed on the CPU at tiny shapes, so
it never rots: the backend comparison, the decode rows and plots, the distillation step and the summary, all
under one folder within the device tool's limit of 8 files."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_smoke_on_cpu_writes_every_output(tmp_path):
    """The shell script the device runs, end to end, with GPU_CHECK_ARGS switching it to the CPU rehearsal."""
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "GPU_CHECK_ARGS": "--device cpu --smoke",
           "GPU_CHECK_SITE": str(tmp_path / "site"), "GPU_CHECK_WHEELS": str(tmp_path / "no_wheels")}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh")], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cuda_backend.json", "decode_cpu.json", "decode_cpu_memory.png", "decode_cpu_ratio.png",
                     "decode_cpu_speed.png", "distill_step_cpu.json", "gpu_check.log",
                     "gpu_check_summary.json"]  # the device tool's limit: 8 files
    log = (out / "gpu_check.log").read_text()  # the log tees the whole run
    assert "no_wheels/mamba_ssm-*.tar.gz" in log and "distill step:" in log and "hybrid25_vs_stock_generate" in log
    backend = json.loads((out / "cuda_backend.json").read_text())
    assert backend["passed"] and set(backend["results"]) == {"fp32", "bf16"}
    assert {"forward", "backward_input", "backward_in_proj.weight", "decode_steps"} <= set(backend["results"]["fp32"]["errors"])
    rows = json.loads((out / "decode_cpu.json").read_text())["rows"]
    assert {r["batch"] for r in rows} == {1, 2}  # both parts of the sweep in one JSON
    assert {(r["model"], r["engine"]) for r in rows} == {("teacher", "same"), ("teacher", "hf_generate"),
                                                         ("hybrid-25%", "same")}
    assert all(r["tokens_per_s"] > 0 and r["achieved_bytes_per_s"] > 0 for r in rows)
    distill = json.loads((out / "distill_step_cpu.json").read_text())
    assert distill["finite"] and distill["step_s"] > 0 and distill["mamba_layers"]
    summary = json.loads((out / "gpu_check_summary.json").read_text())
    assert summary["parts"]["cuda_backend"]["passed"] and summary["parts"]["decode"]["skipped_rows"] == 0
    assert {"hybrid25_fraction_of_bound_at_16k", "hybrid25_vs_stock_generate", "memory_at_16k",
            "distill_step"} <= set(summary["headlines"])
