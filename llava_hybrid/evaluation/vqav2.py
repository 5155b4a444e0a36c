"""VQAv2: LLaVA answers -> the EvalAI submission file (LLaVA's convert_vqav2_for_submission) and, on a
split with public annotations (val), the VQA accuracy.

Data (from visualqa.org): `vqav2/test2015/` images and LLaVA's `llava_vqav2_mscoco_test-dev2015.jsonl`
(the questions asked) + `llava_vqav2_mscoco_test2015.jsonl` (every test question: EvalAI wants an answer
for each). For a local score: `v2_OpenEnded_mscoco_val2014_questions.json`,
`v2_mscoco_val2014_annotations.json`, `val2014/` images; `prepare` writes LLaVA's question-file form
(`llava_vqav2_mscoco_val2014.jsonl`) from the official questions file.

Conversion (LLaVA's rule): every question of the split file gets an entry; its answer is the model's text
through EvalAI's answer processor (LLaVA's copy in llava.eval.m4c_evaluator), '' when missing. Scoring
(val): VQA accuracy, min(1, matching annotators / 3) averaged over the 10 choose 9 annotator subsets
(TextVQAAccuracyEvaluator in llava.eval.m4c_evaluator is that metric). test-dev is scored by EvalAI only.
"""
from __future__ import annotations

import argparse
import json
import os

from .common import read_json, read_jsonl, require_file, score_record, write_json, write_jsonl, write_score

LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."


def prepare(questions_file: str, dst: str, image_prefix: str = "COCO_val2014_") -> list[dict]:
    """Official VQAv2 questions JSON -> LLaVA's question JSONL (image = <prefix><image_id:012d>.jpg unless the
    questions carry an explicit "image" file name)."""
    rows = []
    for q in read_json(require_file(questions_file, "--questions"))["questions"]:
        image = q.get("image") or f"{image_prefix}{q['image_id']:012d}.jpg"
        rows.append({"question_id": q["question_id"], "image": image, "text": q["question"] + LLAVA_SUFFIX,
                     "category": "default"})
    write_jsonl(dst, rows)
    return rows


def convert(src: str, split_file: str, dst: str) -> list[dict]:
    """Answers JSONL -> [{"question_id", "answer"}] over every question of split_file."""
    from llava.eval.m4c_evaluator import EvalAIAnswerProcessor

    results, bad = {}, 0
    with open(require_file(src, "--src"), encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                results[row["question_id"]] = row["text"]
            except ValueError:
                bad += 1
    split = read_jsonl(require_file(split_file, "--split-file"))
    print(f"total results: {len(results)}, total split: {len(split)}, error_line: {bad}")
    process = EvalAIAnswerProcessor()
    answers = [{"question_id": q["question_id"], "answer": process(results[q["question_id"]])
                if q["question_id"] in results else ""} for q in split]
    write_json(dst, answers, indent=None)
    return answers


def accuracy(submission: list[dict], annotations_file: str) -> tuple[float, int, dict]:
    """VQA accuracy of a submission against official annotations; per answer type in details."""
    from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator

    annotations = {a["question_id"]: a for a in read_json(require_file(annotations_file,
                                                                        "--annotation-file"))["annotations"]}
    missing = [s["question_id"] for s in submission if s["question_id"] not in annotations]
    if missing:
        raise ValueError(f"--annotation-file has no annotation for {len(missing)} questions (e.g. {missing[:3]})")
    evaluator = TextVQAAccuracyEvaluator()
    pairs = {}
    for s in submission:
        a = annotations[s["question_id"]]
        pairs.setdefault(a["answer_type"], []).append({"pred_answer": s["answer"],
                                                        "gt_answers": [x["answer"] for x in a["answers"]]})
    every = [pair for group in pairs.values() for pair in group]
    per_type = {t: 100 * evaluator.eval_pred_list(group) for t, group in sorted(pairs.items())}
    return 100 * evaluator.eval_pred_list(every), len(every), {"per_answer_type": per_type}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation vqav2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("prepare", help="official questions JSON -> LLaVA question JSONL")
    pre.add_argument("--questions", required=True)
    pre.add_argument("--dst", required=True)
    pre.add_argument("--image-prefix", default="COCO_val2014_")
    ev = sub.add_parser("eval", help="submission file (+ VQA accuracy where annotations exist)")
    ev.add_argument("--src", required=True, help="merged LLaVA answers")
    ev.add_argument("--split-file", required=True, help="every question of the split (test2015 for test-dev)")
    ev.add_argument("--dst", required=True, help="submission JSON to write")
    ev.add_argument("--annotation-file", default=None, help="official annotations (val); omit for test-dev")
    ev.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    if a.command == "prepare":
        rows = prepare(a.questions, a.dst, a.image_prefix)
        print(f"[vqav2] {len(rows)} questions -> {a.dst}")
        return {"n": len(rows)}
    submission = convert(a.src, a.split_file, a.dst)
    if a.annotation_file and os.path.isfile(a.annotation_file):
        value, n, details = accuracy(submission, a.annotation_file)
        return write_score(a.score_file, score_record("vqav2", "VQAv2 (VQA accuracy)", value, n, details))
    return write_score(a.score_file, score_record(
        "vqav2", "VQAv2 (VQA accuracy)", None, len(submission),
        note=f"no public annotations for this split: upload {a.dst} to the EvalAI VQA challenge"))
