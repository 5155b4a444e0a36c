"""Cost of one distillation step against one plain SFT step of the same student (target: <= 1.5x).

Both steps run the real code on the same batch from LLaVA's own data module (phi template, the plugin's
collator) and train the same parameters (the Mamba layers and the connector, the paper's default):
- SFT step: student forward with labels (cross-entropy) + backward + AdamW step;
- distillation step: `llava_hybrid.distill.trainer.distill_losses` (frozen teacher forward with layer taps,
  student forward with each student Mamba layer's second pass on the teacher's input batched into it, Eq. 11)
  + backward + AdamW step;
- the same distillation step with the second pass run apart (`batch_twin=False`, the previous way).
The teacher's share is the time of its part alone (multimodal splice + forward with taps, no grad) over the
distillation step. Rounds interleave the four measurements, so machine noise hits them alike; the median
of the rounds is kept.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List

import torch

TIMERS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class DistillStepSpec:
    teacher: str                 # a LLaVA teacher checkpoint dir (default: the shipped easy-VQA teacher)
    data_dir: str                # easy-VQA in LLaVA's layout (prepared here if missing)
    ratio: float = 0.25          # --mm_hybrid_ratio of the student
    batch_size: int = 8
    rounds: int = 7
    warmup: int = 2
    timer: str = "cpu"           # "cpu" (process time; fair on a shared 1-thread run) or "wall"
    threads: int = 1


def _llava_batch(teacher_dir: str, data_dir: str, batch_size: int, tokenizer, image_processor, config) -> Dict:
    """One collated batch of real easy-VQA samples through LLaVA's make_supervised_data_module."""
    from llava import conversation as conversation_lib
    from llava.train import train as llava_train

    from llava_hybrid.easyvqa.data import prepare

    data_path, image_folder = os.path.join(data_dir, "train.json"), os.path.join(data_dir, "images")
    if not os.path.isfile(data_path):
        prepare(data_dir, turns=1)
    conversation_lib.default_conversation = conversation_lib.conv_templates["phi"]
    data_args = llava_train.DataArguments(data_path=data_path, lazy_preprocess=True, is_multimodal=True,
                                          image_folder=image_folder,
                                          image_aspect_ratio=getattr(config, "image_aspect_ratio", "square"))
    data_args.image_processor = image_processor
    data_args.mm_use_im_start_end = False
    module = llava_train.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    dataset, collate = module["train_dataset"], module["data_collator"]
    return collate([dataset[i] for i in range(batch_size)])


def _timed(fn: Callable[[], None], clock: Callable[[], float]) -> float:
    start = clock()
    fn()
    return clock() - start


def run_distill_step_benchmark(spec: DistillStepSpec) -> Dict:
    """Measure and return {sft_step_s, distill_step_s, ratio, samples_per_s_*, teacher_share, ...}."""
    threads = torch.get_num_threads()
    try:
        return _measure(spec)
    finally:
        torch.set_num_threads(threads)  # the process's thread count is not ours to keep


def _measure(spec: DistillStepSpec) -> Dict:
    import llava_hybrid
    from llava_hybrid.distill.trainer import capture_layers, distill_losses, optimizer_groups, set_trainable
    from llava_hybrid.host.builder import load_pretrained_model
    from llava_hybrid.host.hybrid_models import build_llava_student
    from llava_hybrid.hybrid.plan import plan_mamba_layers

    if spec.timer not in TIMERS:
        raise ValueError(f"--timer must be one of {sorted(TIMERS)}, got {spec.timer!r}")
    load_at_start = os.getloadavg()[0]  # a shared machine: the load the timings ran under
    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    llava_hybrid.activate()
    tokenizer, teacher, image_processor, _ = load_pretrained_model(
        spec.teacher, None, os.path.basename(os.path.normpath(spec.teacher)), device="cpu")
    teacher.eval().requires_grad_(False)
    n_layers = teacher.config.num_hidden_layers
    layers = plan_mamba_layers(n_layers, ratio=spec.ratio)
    student = build_llava_student(teacher, layers)
    set_trainable(student, ["mamba", "mm_projector"])
    student.train()
    optimizer = torch.optim.AdamW(optimizer_groups(student, 0.01), lr=1e-4, betas=(0.9, 0.95))
    batch = _llava_batch(spec.teacher, spec.data_dir, spec.batch_size, tokenizer, image_processor, teacher.config)

    def sft_step():
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      images=batch["images"], labels=batch["labels"], use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def distill_step():
        losses = distill_losses(student, teacher, batch, layers)  # paper weights: a = b = 1, g = 0
        losses.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def distill_step_separate_twin():
        losses = distill_losses(student, teacher, batch, layers, batch_twin=False)
        losses.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def teacher_part():  # what distill_losses spends on the teacher (steps 1-2 there)
        with torch.no_grad():
            (_, pos, mask, _, embeds, _) = teacher.prepare_inputs_labels_for_multimodal(
                batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"], None)
            with capture_layers(teacher, layers):
                teacher(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)

    clock = TIMERS[spec.timer]
    steps = {"sft": sft_step, "distill": distill_step, "distill_separate_twin": distill_step_separate_twin,
             "teacher": teacher_part}
    for _ in range(spec.warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(spec.rounds):
        for name, step in steps.items():
            times[name].append(_timed(step, clock))
    sft_s, distill_s, separate_s, teacher_s = (statistics.median(times[k]) for k in steps)
    return {
        "spec": asdict(spec),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "load_avg_1m_at_end": os.getloadavg()[0], "load_avg_1m_at_start": load_at_start},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "teacher_layers": n_layers, "mamba_layers": layers,
        "seq_len": int(batch["input_ids"].shape[1]),
        "sft_step_s": sft_s, "distill_step_s": distill_s, "teacher_part_s": teacher_s,
        "ratio_distill_over_sft": distill_s / sft_s,
        "distill_separate_twin_step_s": separate_s, "ratio_separate_twin_over_sft": separate_s / sft_s,
        "samples_per_s_sft": spec.batch_size / sft_s, "samples_per_s_distill": spec.batch_size / distill_s,
        "teacher_share_of_distill_step": teacher_s / distill_s,
        "rounds_s": times,
    }


def write_result(result: Dict, out_json: str) -> None:
    """Write the result JSON (the docs keep it next to the other benchmark outputs)."""
    os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)


@dataclass
class LMDistillStepSpec:
    """One distillation step of the language-model part at a named shape (bench.models.SHAPES), random weights:
    the GPU check's step at the paper's shape (Phi-2 teacher + 25 % student, bf16, 1 x 1428 tokens)."""
    shape: str = "phi2"
    ratio: float = 0.25
    seq_len: int = 1428          # the paper's training sequence (image tokens + text), as embeddings
    batch_size: int = 1
    dtype: str = "bf16"
    device: str = "cuda"
    steps: int = 3               # timed steps, after one warm-up step
    seed: int = 0


def run_lm_distill_step(spec: LMDistillStepSpec) -> Dict:
    """Eq. 11 (alpha = beta = 1, gamma = 0) on random embeddings of `seq_len` tokens: the frozen teacher's forward
    with layer taps (distill.passes.capture_layers), the student's forward with the twin pass batched into it
    (twin_pass), the losses of distill.losses, backward, AdamW on the Mamba layers. What distill_losses adds for
    a VLM (the image splice, the vision tower) is not part of it. Returns seconds per step, samples/s and the
    peak memory (CUDA max_memory_allocated; on CPU the parameter + gradient + optimizer-state bytes)."""
    from llava_hybrid.distill.losses import coverage_mask, layer_distill_loss, prob_distill_loss, total_loss
    from llava_hybrid.distill.passes import capture_layers, twin_pass
    from llava_hybrid.hybrid.init import build_student
    from llava_hybrid.hybrid.plan import plan_mamba_layers

    from .models import DTYPES, build_model, shape_config

    dtype, device = DTYPES[spec.dtype], torch.device(spec.device)
    cuda = device.type == "cuda"
    teacher = build_model(shape_config(spec.shape, 0.0, spec.seq_len), device, dtype, spec.seed)
    teacher.requires_grad_(False)
    layers = plan_mamba_layers(teacher.config.num_hidden_layers, spec.ratio)
    student = build_student(teacher, layers, seed=spec.seed).train()
    student.requires_grad_(False)
    trained = [p for name, p in student.named_parameters() if ".mamba." in name]
    for p in trained:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=1e-5)
    gen = torch.Generator(device="cpu").manual_seed(spec.seed)
    hidden = teacher.config.hidden_size
    embeds = (torch.randn(spec.batch_size, spec.seq_len, hidden, generator=gen) * 0.02).to(device, dtype)
    labels = torch.randint(0, teacher.config.vocab_size, (spec.batch_size, spec.seq_len), generator=gen).to(device)
    mask = coverage_mask(labels, None, "all")

    def step():
        with torch.no_grad(), capture_layers(teacher, layers) as taps:
            t_logits = teacher(inputs_embeds=embeds, use_cache=False).logits  # (B, L, V)
        with twin_pass(student, {i: taps[i] for i in layers}) as twin:
            s_logits = student(inputs_embeds=embeds, use_cache=False).logits  # (B, L, V)
        layer = layer_distill_loss([taps[i][1] for i in layers], [twin[i] for i in layers], mask)
        prob = prob_distill_loss(s_logits, t_logits, mask, 1.0)
        loss = total_loss(layer=layer, prob=prob, ce=prob * 0.0, alpha=1.0, beta=1.0, gamma=0.0)
        loss.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    losses = [step().as_floats()]  # warm-up: kernels compiled / autotuned, optimizer states allocated
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec.steps):
        sync()
        start = time.perf_counter()
        losses.append(step().as_floats())
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    n_trained = sum(p.numel() for p in trained)
    return {
        "spec": asdict(spec), "mamba_layers": layers, "trained_parameters": n_trained,
        "step_s": seconds, "step_s_all": times, "samples_per_s": spec.batch_size / seconds,
        "tokens_per_s": spec.batch_size * spec.seq_len / seconds,
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_mem_source": "max_memory_allocated" if cuda else None,
        "losses": losses, "finite": all(math.isfinite(v) for row in losses for v in row.values()),
        "optimizer_state_dtype": spec.dtype, "note": "AdamW states in the parameter dtype (no fp32 master copy)",
    }
