"""The easy-VQA report: <report_dir>/easyvqa.md (tables + PNG plots) and <report_dir>/easyvqa/results.json."""
from __future__ import annotations

import json
import os

from .data import QUESTION_TYPES

ABLATIONS = (("students", "Hybrid ratio (share of decoder layers that are Mamba-2)"),
             ("position_ablation", "Mamba layer positions (25 %)"),
             ("loss_ablation", "Distillation loss (25 %, even)"),
             ("init_ablation", "Mamba-2 initialisation (25 %, even)"))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


# The paper's orderings (MaTVLM Tab. 2-4, average over its benchmarks; best first)
PAPER_ORDER = {
    "students": (["0.25", "0.125", "0.5"], "25 % best; 12.5 % 0.5 points lower, 50 % 2.2 points lower"),
    "position_ablation": (["even", "begin", "middle", "end"],
                          "even best; begin -1.9, middle -3.4; all-at-the-end fails to distil"),
    "loss_ablation": (["prob+layer", "prob+layer+ce", "prob", "ce"],
                      "prob+layer best; adding ce -1.0; prob alone -0.9; ce alone 5.8 below prob"),
    "init_ablation": (["attention", "random"], "attention init converges faster (no number given)"),
}


def _row(name: str, r: dict, teacher_acc=None) -> str:
    per = r.get("per_type", {})
    cells = [_pct(r.get("accuracy"))] + [_pct(per.get(t, {}).get("accuracy")) for t in QUESTION_TYPES]
    if teacher_acc:
        cells.append(f"{100 * r['accuracy'] / teacher_acc:.1f}" if r.get("accuracy") is not None else "-")
    return f"| {name} | " + " | ".join(cells) + f" | {r.get('n', '-')} |"


def _table(rows: dict, teacher_acc=None) -> list[str]:
    rel = " % of teacher |" if teacher_acc else ""
    head = "| run | accuracy % | " + " | ".join(f"{t} %" for t in QUESTION_TYPES) + f" |{rel} questions |"
    ncol = len(QUESTION_TYPES) + 3 + (1 if teacher_acc else 0)
    return [head, "|" + "---|" * ncol] + [_row(k, v, teacher_acc) for k, v in rows.items()]


def steps_to_reach(curve: list, target: float):
    """First logged step whose loss is <= target (None when never)."""
    return next((step for step, loss in curve if loss <= target), None)


def init_speedup(runs: dict):
    """(attention-init step reaching random init's final loss, random init's last step), or None."""
    att, rnd = runs.get("attention", {}).get("loss_curve"), runs.get("random", {}).get("loss_curve")
    if not att or not rnd:
        return None
    return steps_to_reach(att, rnd[-1][1]), rnd[-1][0]


def standard_error(result: dict):
    """Binomial standard error of one accuracy, in points (None without accuracy and n)."""
    acc, n = result.get("accuracy"), result.get("n")
    return None if acc is None or not n else 100 * (acc * (1 - acc) / n) ** 0.5


def ordering_lines(key: str, runs: dict, se=None) -> list[str]:
    """Our ordering by accuracy next to the paper's, stated plainly."""
    if key not in PAPER_ORDER or len(runs) < 2:
        return []
    paper, note = PAPER_ORDER[key]
    ours = sorted(runs, key=lambda k: -(runs[k].get("accuracy") or 0))
    same = [k for k in paper if k in runs] == [k for k in ours if k in paper]
    ranked = " > ".join(f"{k} ({_pct(runs[k].get('accuracy'))})" for k in ours)
    verdict = "Same order." if same else "The order differs from the paper's."
    accs = [100 * r["accuracy"] for r in runs.values() if r.get("accuracy") is not None]
    if se and accs and max(accs) - min(accs) < 2 * se:
        verdict += (f" But the spread ({max(accs) - min(accs):.1f} points) is under twice one accuracy's standard "
                    f"error ({se:.1f}): this ordering is not resolved at this size.")
    lines = [f"Ordering here (best first): {ranked}. Paper: {' > '.join(paper)} ({note}). {verdict}", ""]
    if key == "init_ablation":
        speed = init_speedup(runs)
        if speed:
            reached, total = speed
            lines += [("Attention init reached random init's final distillation loss "
                       + (f"at step {reached} of {total} ({100 * reached / total:.0f} % of the steps)."
                          if reached is not None else f"at no logged step of {total}.")), ""]
    return lines


def plot_curves(runs: dict, title: str, path: str) -> bool:
    """Loss curves of `runs` ({name: result with loss_curve}) to a PNG; False when none has a curve."""
    curves = {k: v.get("loss_curve") for k, v in runs.items() if v.get("loss_curve")}
    if not curves:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, curve in curves.items():
        steps, losses = zip(*curve)
        ax.plot(steps, losses, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def target_lines(results: dict) -> list[str]:
    """The project's targets next to what this report measured (reached / not reached)."""
    def verdict(ok):
        return "-" if ok is None else ("reached" if ok else "**not reached**")

    teacher_acc = results["teacher"].get("accuracy")
    students = results.get("students", {})
    rows = [("teacher >= 90 %", _pct(teacher_acc), verdict(teacher_acc is not None and teacher_acc >= 0.9))]
    for ratio, need, label in (("0.25", 0.97, "25 % student >= 97 % of the teacher"),
                               ("0.5", 0.90, "50 % student >= 90 % of the teacher")):
        acc = students.get(ratio, {}).get("accuracy")
        rel = None if acc is None or not teacher_acc else acc / teacher_acc
        rows.append((label, "-" if rel is None else f"{100 * rel:.1f} % of teacher",
                     verdict(None if rel is None else rel >= need)))
    speed = init_speedup(results.get("init_ablation", {}))
    if speed:
        reached, total = speed
        rows.append(("attention init reaches random init's final distillation loss in <= half the steps",
                     f"step {reached} of {total}" if reached is not None else f"never in {total} steps",
                     verdict(reached is not None and reached <= total / 2)))
    else:
        rows.append(("attention init reaches random init's final distillation loss in <= half the steps",
                     "not run", "-"))
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"] + [
        f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]
    prior = results.get("text_prior")
    if prior and teacher_acc is not None:
        per_t, per_p = results["teacher"].get("per_type", {}), prior.get("per_type", {})
        cells = ", ".join(f"{t} {_pct(per_t.get(t, {}).get('accuracy'))} vs {_pct(per_p.get(t, {}).get('accuracy'))}"
                          for t in QUESTION_TYPES)
        lines += [f"Teacher against the image-blind text prior (each question's most frequent train answer for its "
                  f"template), per type: {cells} %. A type at the prior's level is answered from the question "
                  "wording, not the image; the students can only inherit what the teacher reads.", ""]
    return lines


def write_report(results: dict, report_dir: str) -> str:
    """Write results.json, the plots and easyvqa.md under `report_dir`; returns the markdown path."""
    out_dir = os.path.join(report_dir, "easyvqa")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    cfg = results.get("config", {})
    lines = ["# easy-VQA: teacher and MaTVLM hybrid students on a CPU", "",
             "Regenerated by `python -m llava_hybrid.easyvqa` (add `--full` for the ablation grid, "
             "`--train-teacher` to retrain the teacher). Numbers: exact match of the answers written by "
             "LLaVA's unchanged `llava.eval.model_vqa` (greedy) on a fixed test subset, per question type.", "",
             f"Machine: {results.get('machine', '?')}; total runtime {results.get('runtime_s', 0):.0f} s; "
             f"{cfg.get('test_questions', '?')} test questions; distillation {cfg.get('distill_steps', '?')} steps "
             f"x batch {cfg.get('distill_batch', '?')} at lr {cfg.get('distill_lr', '?')}.", "",
             "How the teacher recipe was chosen, and what was measured: [easyvqa/recipe.md](easyvqa/recipe.md).", ""]
    se = standard_error(results["teacher"])
    if se is not None:
        acc, n = results["teacher"]["accuracy"], results["teacher"]["n"]
        lines += [f"Sampling noise: one accuracy near {100 * acc:.0f} % over {n} questions has a standard error of "
                  f"{se:.1f} points; orderings between runs closer than about {2 * se:.0f} points are not resolved "
                  "at this size.", ""]
    lines += target_lines(results) + [
             "## Teacher", ""] + _table({"teacher": results["teacher"],
                                           **({"text prior (no image)": results["text_prior"]}
                                              if "text_prior" in results else {})}) + [""]
    if plot_curves({"teacher": results["teacher"]}, "teacher SFT", os.path.join(out_dir, "teacher_loss.png")):
        lines += ["![teacher loss](easyvqa/teacher_loss.png)", ""]
    for key, title in ABLATIONS:
        lines += [f"## {title}", ""]
        if key not in results:
            lines += ["Not run in this report (run with `--full`).", ""]
            continue
        carried = results.get("carried_from", {})
        if key in carried.get("keys", ()):
            lines += [f"From the `--full` run finished {carried.get('run_finished')} (same teacher weights by "
                      "hash, same distillation settings; carried over by this run).", ""]
        lines += _table(results[key], results["teacher"].get("accuracy")) + [""]
        lines += ordering_lines(key, results[key], se)
        png = f"{key}.png"
        if plot_curves(results[key], title, os.path.join(out_dir, png)):
            lines += [f"![{key}](easyvqa/{png})", ""]
    path = os.path.join(report_dir, "easyvqa.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
