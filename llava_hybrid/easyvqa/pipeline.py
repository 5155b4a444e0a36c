"""The easy-VQA main job: data -> teacher -> hybrid students (distillation) -> eval -> report.

    python -m llava_hybrid.easyvqa                   # 12.5 / 25 / 50 % students from the shipped teacher
    python -m llava_hybrid.easyvqa --train-teacher   # retrain the teacher first (the recipe)
    python -m llava_hybrid.easyvqa --full            # + the ablation grid (position, loss, init)

Every stage runs the project's real entry points: `prepare_easyvqa` (data + task tokenizer), the
teacher recipe over the SFT entry, `scripts/distill_hybrid.py` (a subprocess, as a user would run
it), `python -m llava_hybrid.run llava.eval.model_vqa` (LLaVA's unchanged eval script) and the
exact-match scorer. The report is docs/easyvqa.md + docs/easyvqa/results.json (+ PNG plots).

A run without --full keeps the ablation sections of the previous results.json when they were
measured on the same teacher (same weights, by hash) with the same distillation settings; each
carried section says so (`carried_from`). Anything else is dropped, never mixed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

from tqdm import tqdm

from . import score, teacher
from .data import prepare
from .tokenizer import build_easyvqa_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_TEACHER = os.path.join(REPO, "playground", "easyvqa", "teacher")
# loss name -> (alpha L_layer, beta L_prob, gamma L_ce), Eq. 11
LOSSES = {"ce": (0, 0, 1), "layer": (1, 0, 0), "prob": (0, 1, 0), "prob+layer": (1, 1, 0),
          "prob+layer+ce": (1, 1, 1)}
RATIOS = ("0.125", "0.25", "0.5")
POSITIONS = ("even", "begin", "middle", "end")


@dataclass(frozen=True)
class StudentSpec:
    """One distillation run."""
    ratio: str = "0.25"
    positions: str = "even"
    loss: str = "prob+layer"
    init: str = "attention"   # attention (Eq. 6) | random | attention_neutral | attention_calibrated

    @property
    def name(self) -> str:
        return f"r{self.ratio}-{self.positions}-{self.loss}-{self.init}".replace("+", "_")


@dataclass
class RunConfig:
    """What the pipeline does; `smoke()` shrinks it for CI."""
    out: str = os.path.join(REPO, "runs", "easyvqa")
    report_dir: str = os.path.join(REPO, "docs")
    train_teacher: bool = False
    teacher_dir: str = SHIPPED_TEACHER
    teacher_cfg: teacher.TeacherConfig = field(default_factory=teacher.TeacherConfig)
    augment: int = 0
    test_subset: int = 1000
    max_train_images: int | None = None
    max_test_images: int | None = None
    distill_steps: int = 150
    distill_batch: int = 8
    distill_lr: float = 1e-3
    full: bool = False
    ratios: tuple = RATIOS         # the students always run (the paper's Table 2 axis)
    threads: int = 1               # torch threads per stage: 1 is faster than 2 on a shared 2-core CPU


def smoke_config(out: str, report_dir: str) -> RunConfig:
    """The whole pipeline shrunk for CI: 12 train / 2 test images, a tiny teacher, a few steps."""
    tiny = teacher.TeacherConfig(hidden_size=64, num_layers=4, num_heads=2, vision_hidden=32, vision_layers=1,
                                 max_steps=20, batch_size=4, learning_rate=3e-3, warmup_steps=2, tower_steps=5)
    return RunConfig(out=out, report_dir=report_dir, train_teacher=True, teacher_cfg=tiny, test_subset=6,
                     max_train_images=12, max_test_images=2, distill_steps=10, distill_batch=2, ratios=("0.25",),
                     threads=1)


def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def _run(cmd: list[str], log_file: str, threads: int, echo: bool = False, in_process: bool = False) -> None:
    """Run a stage's command, its output to log_file; RuntimeError with the log tail on failure.

    echo: also show the command's progress bars (its lines ending in a carriage return, tqdm's) on stderr.
    in_process: run the same command (`python script.py ...` / `python -m module ...`) inside this process
    instead (no interpreter start-up: what a test on 2 cores can afford); its output is not logged."""
    if in_process:
        return _run_here(cmd, threads)
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(threads), cwd=REPO)
        pending = b""
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            log.write(chunk.decode(errors="replace"))
            if echo:
                pending += chunk
                *done, pending = pending.replace(b"\n", b"\r").split(b"\r")
                bars = [line for line in done if b"it/s]" in line or b"s/it]" in line]
                if bars:
                    sys.stderr.write("\r" + bars[-1].decode(errors="replace")[-160:])
                    sys.stderr.flush()
        returncode = proc.wait()
    if echo:
        sys.stderr.write("\n")
    if returncode != 0:
        with open(log_file) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"stage failed ({' '.join(cmd[:4])} ...), log {log_file}:\n{tail}")


def _run_here(cmd: list[str], threads: int) -> None:
    """`_run(..., in_process=True)`: the command's script or module run as __main__ with its argv."""
    import runpy

    import torch

    if cmd[0] != sys.executable:
        raise ValueError(f"in-process run of {cmd[:3]}: only Python commands run in this process")
    module = cmd[2] if cmd[1] == "-m" else None
    args = cmd[3:] if module else cmd[2:]
    saved_argv, saved_threads = sys.argv, torch.get_num_threads()
    torch.set_num_threads(threads)
    sys.argv = [module or cmd[1], *args]
    try:
        if module:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(cmd[1], run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise RuntimeError(f"stage failed ({' '.join(cmd[:4])} ...): exit status {stop.code}") from stop
    finally:
        sys.argv = saved_argv
        torch.set_num_threads(saved_threads)


def init_flags(init: str) -> list[str]:
    """distill_hybrid.py flags for a StudentSpec.init: the paper's pair by --init_from_attention, the
    calibrated variants (hybrid/init.py) by --mamba_init."""
    if init in ("attention", "random"):
        return ["--init_from_attention", str(init == "attention")]
    return ["--mamba_init", init]


def distill_argv(spec: StudentSpec, teacher_dir: str, data: dict, out_dir: str, cfg, version: str = "phi",
                 logging_steps: int = 5) -> list[str]:
    """scripts/distill_hybrid.py flags for one student (cfg: distill_steps, distill_batch, distill_lr)."""
    alpha, beta, gamma = LOSSES[spec.loss]
    return [
        "--model_name_or_path", teacher_dir, "--version", version,
        "--data_path", data["train"], "--image_folder", data["image_folder"],
        "--mm_hybrid_ratio", spec.ratio, "--mm_hybrid_positions", spec.positions,
        *init_flags(spec.init), "--trainable", "mamba,mm_projector",
        "--distill_alpha", str(alpha), "--distill_beta", str(beta), "--distill_gamma", str(gamma),
        "--output_dir", out_dir, "--max_steps", str(cfg.distill_steps),
        "--per_device_train_batch_size", str(cfg.distill_batch), "--learning_rate", str(cfg.distill_lr),
        "--model_max_length", "512", "--use_cpu", "True", "--bf16", "False",
        "--logging_steps", str(logging_steps), "--save_strategy", "no", "--report_to", "none",
        "--dataloader_num_workers", "0", "--lazy_preprocess", "True", "--seed", "0",
    ]


def evaluate(model_dir: str, data: dict, out_dir: str, threads: int, conv_mode: str = "phi",
             echo: bool = False, in_process: bool = False) -> dict:
    """Answers by `llava.eval.model_vqa` (unchanged, via llava_hybrid.run) -> exact-match scores."""
    answers = os.path.join(out_dir, "answers.jsonl")
    question_file = data.get("test_subset", data["test"])
    cmd = [sys.executable, "-m", "llava_hybrid.run", "llava.eval.model_vqa", "--model-path", model_dir,
           "--question-file", question_file, "--image-folder", data["image_folder"],
           "--answers-file", answers, "--conv-mode", conv_mode, "--temperature", "0"]
    os.makedirs(out_dir, exist_ok=True)
    _run(cmd, os.path.join(out_dir, "eval.log"), threads, echo=echo, in_process=in_process)
    return score.score_files(question_file, answers)


def loss_curve(run_dir: str) -> list[tuple[int, float]]:
    """(step, loss) pairs from a run's trainer_state.json (empty when the run logged none)."""
    path = os.path.join(run_dir, "trainer_state.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        history = json.load(f).get("log_history", [])
    return [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]


def student_grid(full: bool, ratios=RATIOS) -> dict[str, list[StudentSpec]]:
    """{ablation name: specs}; the ratio students (even, prob+layer, attention init) always run, the
    main one (25 %) among them; --full adds the position, loss and init ablations around it."""
    if "0.25" not in ratios:
        raise ValueError(f"ratios {ratios}: the main student (0.25) must be among them")
    main = StudentSpec()
    grid = {"ratio": [replace(main, ratio=r) for r in ratios]}
    if full:
        grid["position"] = [replace(main, positions=p) for p in POSITIONS]
        grid["loss"] = [replace(main, loss=name) for name in LOSSES]
        grid["init"] = [replace(main, init=i) for i in ("attention", "random")]
    return grid


def teacher_fingerprint(teacher_dir: str) -> str:
    """sha256 over the teacher's weight files (LM + projector, and the tower when it has its own)."""
    digest = hashlib.sha256()
    for rel in ("model.safetensors", os.path.join("vision_tower", "model.safetensors")):
        path = os.path.join(teacher_dir, rel)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


ABLATION_KEYS = ("position_ablation", "loss_ablation", "init_ablation")
SAME_RUN_KEYS = ("teacher_sha256", "test_questions", "distill_steps", "distill_batch", "distill_lr")


def carry_ablations(results: dict, previous_file: str) -> list[str]:
    """Copy the ablation sections of `previous_file` into `results` when measured under the same
    teacher and distillation settings (SAME_RUN_KEYS); returns the keys carried.

    `carried_from` names the `--full` run that measured them: the previous run itself, or, when the
    previous run had carried them too, that run's `carried_from` unchanged."""
    if not os.path.isfile(previous_file):
        return []
    with open(previous_file) as f:
        previous = json.load(f)
    prev_cfg, cfg = previous.get("config", {}), results["config"]
    if any(prev_cfg.get(k) != cfg.get(k) for k in SAME_RUN_KEYS):
        return []
    carried = [k for k in ABLATION_KEYS if k in previous]
    for key in carried:
        results[key] = previous[key]
    if carried:
        source = previous.get("carried_from") or {"run_finished": prev_cfg.get("finished"),
                                                  "runtime_s": previous.get("runtime_s")}
        results["carried_from"] = {"keys": carried, "run_finished": source.get("run_finished"),
                                   "runtime_s": source.get("runtime_s")}
    return carried


def run(cfg: RunConfig) -> dict:
    """Run the pipeline; returns the results dict (also written to <report_dir>/easyvqa/results.json)."""
    from .report import write_report

    t0 = time.time()
    grid = student_grid(cfg.full, cfg.ratios)
    specs = list(dict.fromkeys(s for group in grid.values() for s in group))
    stages = tqdm(total=2 + (1 if cfg.train_teacher else 0) + 2 * len(specs), desc="easy-VQA", unit="stage")
    # 1. data + task tokenizer
    stages.set_postfix_str("data")
    data = prepare(os.path.join(cfg.out, "data"), turns=cfg.teacher_cfg.turns, balance=cfg.teacher_cfg.balance,
                   augment=cfg.augment,
                   test_subset=cfg.test_subset,
                   max_train_images=cfg.max_train_images, max_test_images=cfg.max_test_images)
    stages.update()
    # 2. teacher: shipped, or trained by the recipe
    teacher_dir = cfg.teacher_dir
    if cfg.train_teacher:
        stages.set_postfix_str("teacher (SFT)")
        tok_dir = os.path.join(cfg.out, "tokenizer")
        build_easyvqa_tokenizer(tok_dir)
        init_dir = teacher.build_initial_checkpoint(os.path.join(cfg.out, "teacher-init"), tok_dir, cfg.teacher_cfg)
        teacher_dir = os.path.join(cfg.out, "teacher")
        argv = teacher.sft_argv(init_dir, data["train"], data["image_folder"], teacher_dir, cfg.teacher_cfg)
        t = time.time()
        teacher.train_teacher(argv)
        teacher.write_recipe_card(teacher_dir, cfg.teacher_cfg, argv, {"train_s": time.time() - t})
        stages.update()
    elif not os.path.isfile(os.path.join(teacher_dir, "config.json")):
        raise ValueError(f"--teacher {teacher_dir!r}: no checkpoint there; pass --train-teacher to train one")
    stages.set_postfix_str("eval teacher")
    results = {"teacher": {**evaluate(teacher_dir, data, os.path.join(cfg.out, "eval", "teacher"), cfg.threads),
                           "path": os.path.relpath(teacher_dir, REPO),
                           "loss_curve": loss_curve(teacher_dir)}}
    results["text_prior"] = score.text_prior(data.get("test_subset", data["test"]))
    stages.update()
    # 3. students: distill, then eval
    runs = {}
    for spec in specs:
        stages.set_postfix_str(f"distill {spec.name}")
        run_dir = os.path.join(cfg.out, "students", spec.name)
        t = time.time()
        _run([sys.executable, os.path.join(REPO, "scripts", "distill_hybrid.py"),
              *distill_argv(spec, teacher_dir, data, run_dir, cfg)],
             os.path.join(cfg.out, f"distill-{spec.name}.log"), cfg.threads)
        distill_s = time.time() - t
        stages.update()
        stages.set_postfix_str(f"eval {spec.name}")
        runs[spec] = {**evaluate(run_dir, data, os.path.join(cfg.out, "eval", spec.name), cfg.threads),
                      "distill_s": distill_s, "loss_curve": loss_curve(run_dir), "spec": spec.__dict__}
        stages.update()
    stages.close()
    results["students"] = {s.ratio: runs[s] for s in grid["ratio"]}
    if cfg.full:
        results["position_ablation"] = {s.positions: runs[s] for s in grid["position"]}
        results["loss_ablation"] = {s.loss: runs[s] for s in grid["loss"]}
        results["init_ablation"] = {s.init: runs[s] for s in grid["init"]}
    results["runtime_s"] = time.time() - t0
    results["machine"] = f"{platform.machine()} {os.cpu_count()} cores, torch threads {cfg.threads}"
    results["config"] = {"test_questions": results["teacher"]["n"], "distill_steps": cfg.distill_steps,
                         "distill_batch": cfg.distill_batch, "distill_lr": cfg.distill_lr, "full": cfg.full,
                         "teacher_sha256": teacher_fingerprint(teacher_dir),
                         "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not cfg.full:
        carry_ablations(results, os.path.join(cfg.report_dir, "easyvqa", "results.json"))
    write_report(results, cfg.report_dir)
    return results


def parse_args(argv=None) -> RunConfig:
    """RunConfig from command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = RunConfig()
    p.add_argument("--out", default=d.out, help="work directory (data, checkpoints, answers)")
    p.add_argument("--report-dir", default=d.report_dir, help="where easyvqa.md and easyvqa/ are written")
    p.add_argument("--teacher", default=d.teacher_dir, help="teacher checkpoint (default: the shipped one)")
    p.add_argument("--train-teacher", action="store_true", help="train the teacher with the recipe first")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_cfg.max_steps)
    p.add_argument("--full", action="store_true", help="also run the position, loss and init ablations")
    p.add_argument("--ratios", default=",".join(d.ratios), help="students' hybrid ratios (must include 0.25)")
    p.add_argument("--test-subset", type=int, default=d.test_subset, help="fixed test subset size (0 = all)")
    p.add_argument("--distill-steps", type=int, default=d.distill_steps)
    p.add_argument("--distill-batch", type=int, default=d.distill_batch)
    p.add_argument("--distill-lr", type=float, default=d.distill_lr)
    p.add_argument("--augment", type=int, default=d.augment)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--smoke", action="store_true", help="the CI-sized run (tiny data, model and steps)")
    a = p.parse_args(argv)
    bad = [r for r in a.ratios.split(",") if r not in RATIOS]
    if bad or "0.25" not in a.ratios.split(","):
        p.error(f"--ratios {a.ratios!r}: choose from {','.join(RATIOS)} and include 0.25 (the main student)")
    if a.smoke:
        return replace(smoke_config(a.out, a.report_dir), full=a.full)
    return RunConfig(out=a.out, report_dir=a.report_dir, train_teacher=a.train_teacher, teacher_dir=a.teacher,
                     teacher_cfg=replace(d.teacher_cfg, max_steps=a.teacher_steps), augment=a.augment,
                     test_subset=a.test_subset, distill_steps=a.distill_steps, distill_batch=a.distill_batch,
                     distill_lr=a.distill_lr, full=a.full, ratios=tuple(a.ratios.split(",")), threads=a.threads)


def main(argv=None) -> dict:
    """`python -m llava_hybrid.easyvqa`."""
    return run(parse_args(argv))
