"""The benchmarks whose scorer ships in LLaVA itself, run unchanged: POPE (`llava.eval.eval_pope`),
TextVQA (`llava.eval.eval_textvqa`), ScienceQA (`llava.eval.eval_science_qa`). Each prints its own
official output; the headline number is then read back from what the scorer returned, printed or wrote,
into the score file `scripts/eval/all.sh` collects.

    POPE     F1 averaged over the splits present (adversarial / popular / random), as LLaVA-1.5 reports it;
             accuracy, precision, recall, yes-ratio per split in details
    TextVQA  VQA accuracy (TextVQAAccuracyEvaluator: min(1, matches / 3) averaged over the 10 choose 9
             annotator subsets)
    SQA-IMG  accuracy on the questions with an image (eval_science_qa's IMG-Accuracy)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import sys

from .common import read_json, read_jsonl, require_dir, require_file, score_record, write_score


def _tee(fn, *args):
    """Run fn(*args); print what it printed and return (its result, that text)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            result = fn(*args)
    finally:
        sys.stdout.write(buffer.getvalue())
    return result, buffer.getvalue()


def _pope_without_yes(rows: list[dict], label_file: str) -> dict:
    """A split's metrics when eval_pope stopped at precision's 0/0; it had already turned every answer into
    'yes'/'no' in place (its own rule), so the counts are read from those."""
    labels = [json.loads(line)["label"] for line in open(label_file)]
    pairs = list(zip((row["text"] for row in rows), labels))
    tp = sum(p == "yes" and l == "yes" for p, l in pairs)
    tn = sum(p == "no" and l == "no" for p, l in pairs)
    recall = tp / max(1, sum(l == "yes" for l in labels))
    return {"f1": 0.0, "accuracy": (tp + tn) / len(pairs), "precision": None, "recall": recall,
            "yes_ratio": sum(p == "yes" for p, _ in pairs) / len(pairs), "n": len(rows),
            "note": "no 'yes' answer: precision undefined, F1 taken as 0"}


def pope(annotation_dir: str, question_file: str, result_file: str, score_file: str | None) -> dict:
    """llava.eval.eval_pope per split, exactly as its __main__ runs it."""
    from llava.eval.eval_pope import eval_pope

    questions = {q["question_id"]: q for q in read_jsonl(require_file(question_file, "--question-file"))}
    answers = read_jsonl(require_file(result_file, "--result-file"))
    splits = {}
    for name in sorted(os.listdir(require_dir(annotation_dir, "--annotation-dir"))):
        if not (name.startswith("coco_pope_") and name.endswith(".json")):
            raise ValueError(f"--annotation-dir: {name!r} is not a coco_pope_<split>.json file")
        split = name[len("coco_pope_"):-len(".json")]
        rows = [a for a in answers if questions[a["question_id"]]["category"] == split]
        print(f"Category: {split}, # samples: {len(rows)}")
        try:
            _, printed = _tee(eval_pope, rows, os.path.join(annotation_dir, name))
            f1, acc, precision, recall, yes_ratio = (float(x) for x in printed.strip().splitlines()[-1].split(","))
            splits[split] = {"f1": f1, "accuracy": acc, "precision": precision, "recall": recall,
                             "yes_ratio": yes_ratio, "n": len(rows)}
        except ZeroDivisionError:  # eval_pope divides by TP + FP: a model that never says "yes" crashes it
            splits[split] = _pope_without_yes(rows, os.path.join(annotation_dir, name))
            print(f"eval_pope: no 'yes' answer in split {split} (precision undefined): F1 0, "
                  f"accuracy {splits[split]['accuracy']:.3f}")
        print("====================================")
    mean_f1 = 100 * sum(s["f1"] for s in splits.values()) / len(splits)
    return write_score(score_file, score_record("pope", "POPE (F1, mean of splits)", mean_f1,
                                                sum(s["n"] for s in splits.values()), {"splits": splits}))


def textvqa(annotation_file: str, result_file: str, score_file: str | None) -> dict:
    """llava.eval.eval_textvqa.eval_single; its printed accuracy is the headline."""
    from llava.eval.eval_textvqa import eval_single

    _, printed = _tee(eval_single, require_file(annotation_file, "--annotation-file"),
                      require_file(result_file, "--result-file"))
    match = re.search(r"Samples: (\d+)\s+Accuracy: ([\d.]+)%", printed)
    if match is None:
        raise RuntimeError(f"llava.eval.eval_textvqa printed no accuracy:\n{printed}")
    return write_score(score_file, score_record("textvqa", "TextVQA (VQA accuracy)", float(match.group(2)),
                                                int(match.group(1))))


def science_qa(base_dir: str, result_file: str, output_file: str, output_result: str, split: str,
               score_file: str | None) -> dict:
    """llava/eval/eval_science_qa.py as a script (it has no function to call), then IMG-accuracy from the
    per-question analysis it writes to output_file."""
    require_file(os.path.join(base_dir, "problems.json"), "--base-dir", "needs problems.json and pid_splits.json")
    argv = sys.argv
    sys.argv = ["eval_science_qa", "--base-dir", base_dir, "--result-file", require_file(result_file, "--result-file"),
                "--output-file", output_file, "--output-result", output_result, "--split", split]
    try:
        runpy.run_module("llava.eval.eval_science_qa", run_name="__main__")
    finally:
        sys.argv = argv
    analysis = read_json(output_file)
    image = {k: [r for r in analysis[k] if r["is_multimodal"]] for k in ("correct", "incorrect")}
    n_image = len(image["correct"]) + len(image["incorrect"])
    overall = read_json(output_result)
    return write_score(score_file, score_record(
        "sqa", "SQA-IMG (accuracy, questions with an image)", 100 * len(image["correct"]) / n_image, n_image,
        {"all_questions_accuracy": overall["acc"], "all_questions": overall["count"]}))


def main_pope(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation pope", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotation-dir", required=True, help="pope/coco with coco_pope_<split>.json")
    p.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    p.add_argument("--result-file", required=True)
    p.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    return pope(a.annotation_dir, a.question_file, a.result_file, a.score_file)


def main_textvqa(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation textvqa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    p.add_argument("--result-file", required=True)
    p.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    return textvqa(a.annotation_file, a.result_file, a.score_file)


def main_sqa(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation sqa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-dir", required=True, help="scienceqa folder with problems.json and pid_splits.json")
    p.add_argument("--result-file", required=True)
    p.add_argument("--output-file", required=True)
    p.add_argument("--output-result", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    return science_qa(a.base_dir, a.result_file, a.output_file, a.output_result, a.split, a.score_file)
