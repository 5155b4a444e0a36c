"""GQA: LLaVA answers -> GQA's predictions file (LLaVA's convert_gqa_for_eval) -> GQA's evaluation.

Data (GQA v1.2, from the GQA site): `gqa/data/testdev_balanced_questions.json` ({question id: {"question",
"imageId", "answer", "types": {"structural", "semantic", "detailed"}, "isBalanced", "entailed", "semantic",
...}}) and `gqa/data/images/<imageId>.jpg`; LLaVA's `gqa/llava_gqa_testdev_balanced.jsonl` asks each
question with "\\nAnswer the question using a single word or phrase.".

Conversion (LLaVA's rule): prediction = answer text with trailing '.' stripped, lower-cased; file
[{"questionId", "prediction"}]. Scoring follows GQA's eval.py: over the balanced questions, accuracy =
exact match; "open" = structural type query, "binary" = the rest; accuracy per structural and semantic
type and per reasoning-step count; consistency = for each correct question, the accuracy on its entailed
questions, averaged. Validity, plausibility, grounding and distribution need the choices / scene-graph
files that the v1.2 release lacks (as LLaVA notes) and are not computed.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from .common import read_json, read_jsonl, require_file, score_record, write_json, write_score


def convert(src: str, dst: str) -> list[dict]:
    """LLaVA answers JSONL -> GQA predictions JSON."""
    predictions = [{"questionId": row["question_id"], "prediction": row["text"].rstrip(".").lower()}
                   for row in read_jsonl(require_file(src, "--src"))]
    write_json(dst, predictions, indent=None)
    return predictions


def _mean(values) -> float:
    return 100 * sum(values) / len(values) if values else float("nan")


def evaluate(questions_file: str, predictions_file: str) -> dict:
    """GQA's eval.py metrics that need only the questions file (see the module docstring)."""
    questions = read_json(require_file(questions_file, "--questions"))
    predictions = {str(p["questionId"]): p["prediction"] for p in read_json(require_file(predictions_file,
                                                                                          "--predictions"))}
    balanced = {qid: q for qid, q in questions.items() if q.get("isBalanced", True)}
    missing = [qid for qid in balanced if qid not in predictions]
    if missing:
        raise ValueError(f"--predictions: {len(missing)} of {len(balanced)} balanced questions have no prediction "
                         f"(e.g. {missing[:3]}); did every chunk finish?")
    scores = defaultdict(list)
    per_structural, per_semantic, per_steps = defaultdict(list), defaultdict(list), defaultdict(list)
    for qid, q in balanced.items():
        correct = predictions[qid] == q["answer"]
        scores["accuracy"].append(correct)
        scores["open" if q["types"]["structural"] == "query" else "binary"].append(correct)
        per_structural[q["types"]["structural"]].append(correct)
        per_semantic[q["types"]["semantic"]].append(correct)
        per_steps[len(q.get("semantic", []))].append(correct)
        entailed = [e for e in q.get("entailed", []) if e != qid and e in predictions and e in questions]
        if correct and entailed:
            scores["consistency"].append(sum(predictions[e] == questions[e]["answer"] for e in entailed)
                                         / len(entailed))
    return {"accuracy": _mean(scores["accuracy"]), "binary": _mean(scores["binary"]), "open": _mean(scores["open"]),
            "consistency": _mean(scores["consistency"]), "n": len(balanced),
            "per_structural_type": {k: _mean(v) for k, v in sorted(per_structural.items())},
            "per_semantic_type": {k: _mean(v) for k, v in sorted(per_semantic.items())},
            "per_steps": {str(k): _mean(v) for k, v in sorted(per_steps.items())},
            "not_computed": ["validity", "plausibility", "grounding", "distribution"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation gqa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="merged LLaVA answers")
    p.add_argument("--dst", required=True, help="predictions file to write (testdev_balanced_predictions.json)")
    p.add_argument("--questions", required=True, help="testdev_balanced_questions.json")
    p.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    convert(a.src, a.dst)
    result = evaluate(a.questions, a.dst)
    for key in ("binary", "open", "consistency"):
        print(f"  {key}: {result[key]:.2f}")
    return write_score(a.score_file, score_record("gqa", "GQA (accuracy, testdev balanced)", result["accuracy"],
                                                  result["n"], result))
