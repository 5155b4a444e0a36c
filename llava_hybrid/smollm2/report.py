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
             f"Teacher perplexity: **{teacher:.2f}** (its checkpoint: {text['teacher']['checkpoint']}, "
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
                     f"({100 * (1 - e2e[best_e2e]['ppl'] / start):.1f} % lower). Few e2e steps were affordable (each runs "
                     "the whole student forward and backward), so this shows the direction, not the size at scale.")
    return lines


def vlm_section(vlm: Dict | None) -> List[str]:
    if not vlm:
        return ["## VLM: SmolLM2 + SigLIP-architecture tower on easy-VQA", "",
                "**Not measured**: the VLM part (SmolLM2 + the easy-VQA stage-0 tower + mlp2x_gelu through LLaVA's "
                "Llama classes, SFT, a 25 % hybrid distilled and scored through llava.eval.model_vqa) is not built yet; "
                "results.json has no `vlm` section."]
    lines = ["## VLM: SmolLM2 + SigLIP-architecture tower on easy-VQA", "",
             "| model | accuracy % | yes/no % | % of teacher |", "|---|---|---|---|"]
    t = vlm["teacher"]
    lines.append(f"| teacher | {_f(t.get('accuracy'), 1)} | {_f(t.get('yes/no'), 1)} | 100 |")
    for ratio, s in (vlm.get("students") or {}).items():
        lines.append(f"| {ratio} | {_f(s.get('accuracy'), 1)} | {_f(s.get('yes/no'), 1)} | "
                     f"{_f(100 * s['accuracy'] / t['accuracy'], 1) if t.get('accuracy') else '-'} |")
    return lines


def write_report(results: Dict, report_dir: str) -> str:
    """Write <report_dir>/real_backbone.md and real_backbone/results.json; returns the markdown path."""
    out_dir = os.path.join(report_dir, "real_backbone")
    os.makedirs(out_dir, exist_ok=True)
    runtime = results.get("runtime_s") or {}
    lines = ["# A real pretrained backbone: SmolLM2-135M-Instruct through MaTVLM", "",
             "Regenerated by `python -m llava_hybrid.smollm2 text` (the text part). Machine: "
             f"{results.get('machine')}; text part {_f(runtime.get('text'), 0)} s"
             f" (finished {(results.get('text') or {}).get('finished', '-')}). How each setting was chosen and every "
             "run measured: [real_backbone/recipe.md](real_backbone/recipe.md).", ""]
    if results.get("text"):
        lines += text_section(results["text"], out_dir)
        lines += [""] + comparison_section(results["text"], report_dir)
    lines += [""] + vlm_section(results.get("vlm"))
    md = os.path.join(report_dir, "real_backbone.md")
    with open(md + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(md + ".tmp", md)
    with open(os.path.join(out_dir, "results.json.tmp"), "w") as f:
        json.dump(results, f, indent=1)
    os.replace(os.path.join(out_dir, "results.json.tmp"), os.path.join(out_dir, "results.json"))
    return md
