"""docs/real_backbone.md + docs/real_backbone/results.json + PNG curves, from the results dict."""
from __future__ import annotations

import json
import os
from typing import Dict, List

INIT_LABELS = {
    "attention": "Eq. 6 as the paper specifies it (default)",
    "random": "random (Mamba2 defaults)",
    "attention_neutral": "Eq. 6, rest neutralised",
    "attention_calibrated": "Eq. 6, neutralised + calibrated",
}
PPL_TARGET = 1.25       # 25 % student's held-out perplexity <= 1.25 x the teacher's
VLM_TARGET = 0.97       # 25 % VLM student >= 97 % of the teacher's accuracy


def _plot(path: str, series: Dict[str, List], title: str, ylabel: str, logy: bool = False,
          hline: float | None = None, hlabel: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="." if len(points) < 30 else None)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1, label=hlabel)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(x, digits=2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def text_section(text: Dict, out_dir: str) -> List[str]:
    """Markdown lines of the text part; writes its PNGs into out_dir."""
    teacher = text["teacher"]["ppl"]
    init = text["init"]
    runs = init["runs"]
    cfg = text["config"]
    lines = ["## Text: SmolLM2-135M-Instruct hybrids on *Botchan*", "",
             f"Held-out perplexity over the novel's last {cfg['heldout_tokens']:,} tokens (sequences of {cfg['seq_len']}); "
             f"distillation on the {cfg['max_train_tokens'] or 'remaining'} tokens before them, layer-only "
             f"(L_layer, Eq. 9 as written: unsquared l2, a = 1, b = g = 0; each student Mamba layer on the teacher's "
             f"input, the teacher's taps cached once), {init['steps']} steps x batch {init['batch']}, AdamW lr "
             f"{init['lr']:g}, betas (0.9, 0.95), WSD 10 % / 10 %, only the Mamba mixers train. "
             f"Teacher perplexity: **{teacher:.2f}** (its checkpoint: {_home(text['teacher']['checkpoint'])}, "
             f"{text['teacher']['num_layers']} layers).", "",
             "### Students (12.5 / 25 / 50 %)", "",
             "| ratio | Mamba layers | init | slice perplexity at init | held-out perplexity after | x teacher | train s | s/step |",
             "|---|---|---|---|---|---|---|---|"]
    for ratio in ("0.125", "0.25", "0.5"):
        s = text["students"].get(ratio)
        if s:
            lines.append(f"| {float(ratio):.1%} | {len(s['layers'])}: {s['layers']} | {s['init']} | {_f(s['init_ppl_slice'])} | "
                         f"{_f(s['ppl'])} | {_f(s['ppl_vs_teacher'], 3)} | {_f(s['train_s'], 0)} | {_f(s['s_per_step'])} |")
    main = text["students"].get("0.25")
    if main:
        reached = main["ppl_vs_teacher"] <= PPL_TARGET
        lines += ["", f"Target: 25 % student <= {PPL_TARGET} x the teacher's perplexity: "
                      f"{main['ppl_vs_teacher']:.3f} x, **{'reached' if reached else 'not reached'}**."]
    _plot(os.path.join(out_dir, "text_students_ppl.png"),
          {f"{float(r):.1%} ({s['init']})": s["ppl_curve"] for r, s in text["students"].items()},
          "held-out slice perplexity during layer-only distillation", "perplexity", logy=True,
          hline=text["teacher"]["ppl_slice"], hlabel="teacher (slice)")
    lines += ["", "![students](real_backbone/text_students_ppl.png)", "",
              "### Initialisation (25 %, same steps, data order and seed)", "",
              "| init | slice perplexity at init | final layer loss | held-out perplexity after | x teacher | reaches random's final loss at step | mixer fit at init |",
              "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        fits = [v.get("fit") for v in (run.get("init_report") or {}).get("layers", {}).values() if v.get("fit") is not None]
        fit = f"{min(fits):.2f}-{max(fits):.2f}" if fits else "-"
        lines.append(f"| {INIT_LABELS.get(name, name)} | {_f(run['init_ppl_slice'])} | {_f(run.get('final_loss'), 1)} | "
                     f"{_f(run['ppl'])} | {_f(run['ppl_vs_teacher'], 3)} | "
                     f"{run.get('reaches_random_final_loss_at') if run.get('reaches_random_final_loss_at') is not None else 'never'} | {fit} |")
    lines += ["", f"Best measured: **{INIT_LABELS.get(init['best'], init['best'])}** (`build_student(init=\"{init['best']}\")`); "
                  f"the paper's form stays the default. \"Mixer fit\" is ||mixer(u) - attention(u)|| / ||attention(u)|| on "
                  "the calibration batch (0 = the mixer reproduces the attention's output, 1 = no better than zero), "
                  "per layer, min-max; losses are 5-step moving averages."]
    _plot(os.path.join(out_dir, "text_init_loss.png"),
          {INIT_LABELS.get(k, k): r["loss_curve"] for k, r in runs.items()},
          "layer loss (unsquared l2, summed over 8 layers), 25 %", "L_layer", logy=True)
    _plot(os.path.join(out_dir, "text_init_ppl.png"),
          {INIT_LABELS.get(k, k): r["ppl_curve"] for k, r in runs.items()},
          "held-out slice perplexity, 25 %", "perplexity", logy=True,
          hline=text["teacher"]["ppl_slice"], hlabel="teacher (slice)")
    lines += ["", "![init loss](real_backbone/text_init_loss.png)", "", "![init perplexity](real_backbone/text_init_ppl.png)"]
    # loss balance and end to end
    bal = text.get("loss_balance") or {}
    if bal:
        lines += ["", "### Loss balance (one training batch, no grad)", "",
                  "| student | L_prob (KL, per token) | L_layer l2 (Eq. 9 as written) | L_layer token_l2 (per token) | L_layer mse |",
                  "|---|---|---|---|---|"]
        for name, b in bal.items():
            lines.append(f"| {name.replace('_', ' ')} | {_f(b['prob'], 3)} | {_f(b['layer_l2'], 1)} | "
                         f"{_f(b['layer_token_l2'], 2)} | {_f(b['layer_mse'], 4)} |")
    e2e = text.get("e2e") or {}
    if e2e.get("runs"):
        lines += ["", f"### End-to-end stage after the layer-only one (from the 25 % {e2e['from'].split()[-1]} student, "
                      f"perplexity {e2e['start_ppl']:.2f}; fresh AdamW each)", "",
                  "| stage | lr | layer norm | steps | perplexity after | x teacher | s/step |", "|---|---|---|---|---|---|---|"]
        for name, run in e2e["runs"].items():
            lines.append(f"| {name} | {run['lr']:g} | {run['layer_norm']} | {run['steps']} | {_f(run['ppl'])} | "
                         f"{_f(run['ppl_vs_teacher'], 3)} | {_f(run['s_per_step'], 1)} |")
        _plot(os.path.join(out_dir, "text_e2e_ppl.png"), {k: r["ppl_curve"] for k, r in e2e["runs"].items()},
              "held-out slice perplexity, end-to-end stage", "perplexity",
              hline=text["teacher"]["ppl_slice"], hlabel="teacher (slice)")
        lines += ["", "![end to end](real_backbone/text_e2e_ppl.png)"]
    return lines


def comparison_section(text: Dict, report_dir: str) -> List[str]:
    """The text results beside the toy (docs/easyvqa/results.json, when there) and the paper's claims."""
    runs, students = text["init"]["runs"], text["students"]
    lines = ["## Against the toy and the paper", ""]
    ppl = {r: s["ppl_vs_teacher"] for r, s in students.items()}
    if len(ppl) == 3:
        order = " > ".join(f"{float(r):.1%}" for r in sorted(ppl, key=ppl.get))
        each = ", ".join(f"{float(r):.1%} {v:.3f} x" for r, v in sorted(ppl.items()))
        lines.append(f"- Ratio (paper Table 2: 25 % > 12.5 % > 50 %, 50 % 2.2 points below 25 %): here, closest to the "
                     f"teacher first, {order} ({each}): "
                     "more Mamba layers cost more, monotonically, as in the toy (12.5 > 25 > 50 %); the paper's 25 % "
                     "optimum is not seen.")
    if "attention" in runs and "random" in runs:
        a, r = runs["attention"], runs["random"]
        best = runs.get(text["init"]["best"], a)
        lines.append(f"- Init (paper: Eq. 6 \"is important to accelerate the convergence\"): on this real model Eq. 6 as "
                     f"specified starts far worse than random (slice perplexity {a['init_ppl_slice']:,.0f} vs "
                     f"{r['init_ppl_slice']:,.0f}) and ends worse ({a['ppl_vs_teacher']:.2f} x vs {r['ppl_vs_teacher']:.2f} x "
                     f"the teacher after {text['init']['steps']} steps), although its layer loss passes random's final "
                     f"value at step {a.get('reaches_random_final_loss_at')}. The claim holds only for Eq. 6 with the rest "
                     f"of the mixer neutralised and its output calibrated: {best['init_ppl_slice']:,.1f} at init, "
                     f"{best['ppl_vs_teacher']:.3f} x after, random's final layer loss reached at step "
                     f"{best.get('reaches_random_final_loss_at')} of {text['init']['steps']}.")
    toy_file = os.path.join(report_dir, "easyvqa", "results.json")
    if os.path.isfile(toy_file):
        with open(toy_file) as f:
            toy = json.load(f)
        ia = toy.get("init_ablation") or {}
        if "attention" in ia and "random" in ia:
            lines.append(f"- The toy (docs/easyvqa.md, a from-scratch 8-layer model): Eq. 6 as specified beat random on "
                         f"accuracy ({100 * ia['attention']['accuracy']:.1f} vs {100 * ia['random']['accuracy']:.1f} %) but "
                         "was slow to pass random's final loss; on the real model the paper's form loses on both counts "
                         "(why the two differ is not measured here).")
    e2e = (text.get("e2e") or {}).get("runs") or {}
    if e2e:
        best_e2e = min(e2e, key=lambda k: e2e[k]["ppl"])
        moved = ", ".join(f"{k}: {v['ppl']:.2f}" for k, v in e2e.items())
        start = text["e2e"]["start_ppl"]
        helped = [k for k, v in e2e.items() if v["ppl"] < start]
        lines.append(f"- Loss (paper Table 4: prob + layer best): the layer-only stage did most of the work here; the "
                     f"end-to-end stages (L_prob + L_layer, fresh AdamW, {len(helped)} of {len(e2e)} lowered perplexity) "
                     f"moved it from {start:.2f} to {moved}; best {best_e2e!r} "
                     f"({100 * (1 - e2e[best_e2e]['ppl'] / start):.1f} % lower), after {text['config']['e2e_steps']} steps each "
                     f"on {text['config']['max_train_tokens'] or 'all the'} training tokens: the direction, not the size at scale.")
    return lines


def _home(path: str) -> str:
    """The path with the user's home shown as ~ (the default checkpoint cache is ~/.cache/llava_hybrid)."""
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + os.sep) else path


def _se(p: float, n: int) -> float:
    """Standard error of an accuracy p over n questions."""
    return (p * (1 - p) / n) ** 0.5 if n else float("nan")


def _share(student: Dict, teacher: Dict):
    """The student's accuracy as a fraction of the teacher's (None when the teacher scored 0)."""
    return student["accuracy"] / teacher["accuracy"] if teacher.get("accuracy") else None


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _row(name: str, r: Dict, teacher: Dict | None = None) -> str:
    share = _f(100 * r["accuracy"] / teacher["accuracy"], 1) if teacher and teacher.get("accuracy") else "-"
    return (f"| {name} | {_pct(r['accuracy'])} | {_pct(r['yes/no'])} | {_pct(r['shape'])} | {_pct(r['color'])} | "
            f"{share} | {r['n']} |")


def vlm_section(vlm: Dict | None, out_dir: str, report_dir: str) -> List[str]:
    """Markdown lines of the VLM part (and its comparison with the toy and the paper); writes its PNG."""
    title = "## VLM: SmolLM2 + the easy-VQA SigLIP-architecture tower, as a LLaVA model"
    if not vlm:
        return [title, "", "**Not measured**: results.json has no `vlm` section; run `python -m llava_hybrid.smollm2 vlm`."]
    t, prior, cfg = vlm["teacher"], vlm["text_prior"], vlm["config"]
    ratio, s = next(iter(vlm["students"].items()))
    sft, dist = t["sft"], s["distill"]
    per_conversation = cfg["turns"] if cfg.get("turns") else "all of an image's questions, ~10"
    lines = [title, "",
             f"Teacher: LLaVA's own `LlavaLlamaForCausalLM` over SmolLM2-135M-Instruct ({s['num_layers']} layers), the "
             "easy-VQA stage-0 SigLIP tower of the toy teacher (frozen; 16 image tokens from its last layer), a new "
             "mlp2x_gelu projector and the `chatml` template (SmolLM2's ChatML layout), fine-tuned by "
             f"`scripts/train_sft.py`: {sft['trained']}, {sft['steps']} steps x {sft['batch']} conversations "
             f"({per_conversation} answers each), lr {sft['lr']:g} (projector {sft['projector_lr']:g}), cosine, fp32, "
             f"{_f(sft['train_s'], 0)} s. Student: `scripts/distill_hybrid.py --mm_hybrid_ratio {ratio}` -> "
             f"{len(s['layers'])} Mamba layers {s['layers']} (the nearest whole number to {s['num_layers']} x {ratio} = "
             f"{float(ratio) * s['num_layers']:g}), "
             f"init `{s['spec']['init']}`, loss {s['spec']['loss']} (alpha, beta, gamma = "
             f"{s['loss_weights']['alpha']:g}, {s['loss_weights']['beta']:g}, {s['loss_weights']['gamma']:g}), "
             f"{dist['trained']} trained, {dist['steps']} steps x {dist['batch']}, AdamW lr {dist['lr']:g}, WSD, "
             f"{_f(dist['train_s'], 0)} s. Both scored by LLaVA's unchanged `llava.eval.model_vqa` (greedy) on the "
             f"fixed {t['n']}-question easy-VQA test subset, exact match.", "",
             "| model | accuracy % | yes/no % | shape % | color % | % of teacher | questions |",
             "|---|---|---|---|---|---|---|",
             _row("teacher (SmolLM2 VLM)", t, t), _row("text prior (no image)", prior),
             _row(f"{float(ratio):.0%} hybrid student", s, t), ""]
    of = _share(s, t) or 0.0
    reached = of >= VLM_TARGET
    yn, yn_prior, n_yn = t["yes/no"], prior["yes/no"], t["per_type"]["yes/no"]["n"]
    gap = (yn or 0.0) - (yn_prior or 0.0)
    reads = yn is not None and yn_prior is not None and gap > 2 * _se(yn_prior, n_yn)
    cut = sized_down(cfg)
    if cut or vlm.get("note"):
        lines += ["Sized down: " + "; ".join(cut) + (f". {vlm['note']}" if vlm.get("note") else "."), ""]
    lines += [f"Target: the {float(ratio):.0%} student >= {VLM_TARGET:.0%} of the teacher's accuracy: "
              f"{_pct(of)} %, **{'reached' if reached else 'not reached'}**"
              + ((" only nominally: the teacher is at or below the image-blind prior's "
                  f"{_pct(prior['accuracy'])} %, so it has nothing of the image for the student to keep."
                  if t["accuracy"] <= prior["accuracy"] else ".") if reached else f" (after {dist['steps']} distillation steps x {dist['batch']} conversations"
                 + (", sized down as above" if cut else "") + "; see the loss curve)."),
              f"One accuracy's standard error over {s['n']} questions: {_pct(_se(s['accuracy'], s['n']))} points "
              "(both models answer the same questions, so their difference is less noisy than that).",
              "",
              f"Yes/no against the image-blind text prior (each question's most frequent train answer for its "
              f"template): teacher {_pct(yn)} % vs prior {_pct(yn_prior)} % over {n_yn} questions "
              f"(one standard error {_pct(_se(yn_prior, n_yn))} points): "
              + (f"{100 * gap:+.1f} points: the teacher reads the image for yes/no questions." if reads else
                 f"{100 * gap:+.1f} points: below the prior, the teacher has not even learned the answers' base rates."
                 if gap < -2 * _se(yn_prior or 0.0, n_yn) else
                 f"{100 * gap:+.1f} points, within two standard errors: for yes/no questions the teacher is at the "
                 "prior's level (it answers from the wording, not the image)."),
              f"Shape {_pct(t['shape'])} vs {_pct(prior['shape'])} %, colour {_pct(t['color'])} vs "
              f"{_pct(prior['color'])} %.", ""]
    series = {"teacher SFT (loss on answers)": t.get("loss_curve") or []}
    for term, points in (s.get("loss_terms") or {}).items():
        if points and any(v for _, v in points):
            series[f"student {term}"] = points
    _plot(os.path.join(out_dir, "vlm_loss.png"), series, "VLM: teacher SFT and student distillation", "loss", logy=True)
    lines += ["![vlm losses](real_backbone/vlm_loss.png)", ""]
    lines += vlm_comparison(vlm, report_dir)
    return lines


def sized_down(cfg: Dict) -> List[str]:
    """'<setting> <run> instead of <default>' for each VLMConfig default the run changed (what was cut)."""
    from .vlm import VLMConfig

    default = VLMConfig()
    names = {"sft_steps": "SFT steps", "sft_batch": "SFT batch", "sft_lr": "SFT lr", "projector_lr": "projector lr",
             "distill_steps": "distillation steps", "distill_batch": "distillation batch",
             "distill_lr": "distillation lr", "test_subset": "test questions", "max_train_images": "train images",
             "turns": "questions per conversation", "threads": "torch threads"}
    def shown(key, value):
        if value is None or (key == "turns" and value == 0):
            return "all"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return [f"{label} {shown(key, cfg[key])} instead of {shown(key, getattr(default, key))}"
            for key, label in names.items() if key in cfg and cfg[key] != getattr(default, key)]


def vlm_comparison(vlm: Dict, report_dir: str) -> List[str]:
    """The VLM results beside the toy (docs/easyvqa/results.json) and the paper's Tables 1-2."""
    t, prior = vlm["teacher"], vlm["text_prior"]
    ratio, s = next(iter(vlm["students"].items()))
    lines = ["### Against the toy and the paper", ""]
    toy_file = os.path.join(report_dir, "easyvqa", "results.json")
    if os.path.isfile(toy_file):
        with open(toy_file) as f:
            toy = json.load(f)
        tt, tp, ts = toy["teacher"], toy["text_prior"]["per_type"], (toy.get("students") or {}).get(ratio)
        line = (f"- The toy (docs/easyvqa.md: an 8-layer Phi trained from scratch on easy-VQA, the same tower and test "
                f"questions' source): teacher {_pct(tt['accuracy'])} %, yes/no {_pct(tt['per_type']['yes/no']['accuracy'])} % "
                f"vs its prior {_pct(tp['yes/no']['accuracy'])} % over {tt['n']} questions")
        if ts:
            line += f"; its {float(ratio):.0%} student {_pct(_share(ts, tt))} % of the teacher"
        lines.append(line + f". Here, with a pretrained LM: teacher {_pct(t['accuracy'])} %, yes/no "
                     f"{_pct(t['yes/no'])} % vs {_pct(prior['yes/no'])} %, student "
                     f"{_pct(_share(s, t))} % of the teacher, after "
                     f"{t['sft']['steps']} SFT and {s['distill']['steps']} distillation steps (the toy: "
                     f"{_toy_sft_steps(tt['path'])} and {toy['config']['distill_steps']:,}).")
    lines.append(f"- The paper (Tables 1-2, TinyLLaVA-3.1B teacher, ShareGPT4V SFT data, batch 64): the 25 % MaTVLM keeps "
                 "98.6 % of the teacher on VQAv2 (79.0 vs 80.1), 99.0 % on GQA (61.5 vs 62.1) and 98.6 % on POPE "
                 f"(86.0 vs 87.2). Here the {float(ratio):.0%} student keeps {_pct(_share(s, t))} % "
                 f"on easy-VQA, with {len(s['layers'])} of {s['num_layers']} layers Mamba-2 and "
                 f"{s['distill']['steps']} distillation steps of {s['distill']['batch']} conversations instead of an "
                 "epoch of 665K conversations.")
    lines.append("- Table 2 (ratio: 25 % best, 12.5 % -0.5, 50 % -2.2 points on the average) and Table 4 (loss: "
                 "prob + layer best, +0.9 over prob alone, -1.0 when ce is added): only the 25 % student with the "
                 f"paper's best loss ({s['spec']['loss']}, alpha = beta = 1, gamma = 0) was affordable in the VLM "
                 "part, so neither ordering is tested on the VLM here; the text part above orders the ratios on "
                 "the same LM.")
    lines.append(f"- Init (the paper: Eq. 6 'is important to accelerate the convergence'): the student uses "
                 f"`{s['spec']['init']}`" + (" (Eq. 6 with the rest of the mixer neutralised and its output "
                 "calibrated), not the paper's Eq. 6 as specified (`attention`), because the text part measured "
                 "Eq. 6 as specified starting and ending worse than random init on this LM; the VLM does not "
                 "re-measure the init." if s["spec"]["init"] == "attention_calibrated" else "."))
    return lines


def _toy_sft_steps(teacher_path: str) -> str:
    """The toy teacher's SFT steps, from the recipe.json its training wrote beside it (repo-relative path)."""
    from .vlm import REPO

    recipe = os.path.join(REPO, teacher_path, "recipe.json")
    if not os.path.isfile(recipe):
        return "unknown"
    with open(recipe) as f:
        return f"{json.load(f)['steps']:,}"


def write_report(results: Dict, report_dir: str) -> str:
    """Write <report_dir>/real_backbone.md and real_backbone/results.json; returns the markdown path."""
    out_dir = os.path.join(report_dir, "real_backbone")
    os.makedirs(out_dir, exist_ok=True)
    runtime, machine = results.get("runtime_s") or {}, _machines(results)
    made = []
    for part in ("text", "vlm"):
        if results.get(part):
            made.append(f"the {part} part by `python -m llava_hybrid.smollm2 {part}` ({machine.get(part, '-')}; "
                        f"{_f(runtime.get(part), 0)} s, finished {results[part].get('finished', '-')})")
    lines = ["# A real pretrained backbone: SmolLM2-135M-Instruct through MaTVLM", "",
             "Each section is regenerated by its own command: " + ("; ".join(made) or "none run yet") + ". How each "
             "setting was chosen and every run measured: [real_backbone/recipe.md](real_backbone/recipe.md).", ""]
    if results.get("text"):
        lines += text_section(results["text"], out_dir)
        lines += [""] + comparison_section(results["text"], report_dir)
    lines += [""] + vlm_section(results.get("vlm"), out_dir, report_dir)
    md = os.path.join(report_dir, "real_backbone.md")
    with open(md + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(md + ".tmp", md)
    with open(os.path.join(out_dir, "results.json.tmp"), "w") as f:
        json.dump(results, f, indent=1)
    os.replace(os.path.join(out_dir, "results.json.tmp"), os.path.join(out_dir, "results.json"))
    return md


def _machines(results: Dict) -> Dict[str, str]:
    """{part: machine} (a results.json written before per-part provenance holds one string: the text part's)."""
    machine = results.get("machine") or {}
    return {"text": machine} if isinstance(machine, str) else dict(machine)


def machine_line(threads: int) -> str:
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, torch threads {threads}"


def jsonable(obj):
    """Tuples -> lists, keys -> strings, recursively (what json.dump writes and reads back)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def merge_section(report_dir: str, part: str, section: Dict, threads: int) -> Dict:
    """Put one part's results (`text` | `vlm`) into <report_dir>/real_backbone/results.json, keeping the other
    part and its provenance (machine, runtime), and regenerate the report; returns the merged results."""
    if part not in ("text", "vlm"):
        raise ValueError(f"merge_section: part {part!r} is not 'text' or 'vlm'")
    path = os.path.join(report_dir, "real_backbone", "results.json")
    previous: Dict = {}
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
    results = {"text": previous.get("text"), "vlm": previous.get("vlm"), "machine": _machines(previous),
               "runtime_s": dict(previous.get("runtime_s") or {})}
    results[part] = section
    results["machine"][part] = machine_line(threads)
    results["runtime_s"][part] = section.get("runtime_s")
    results = jsonable(results)
    write_report(results, report_dir)
    return results
