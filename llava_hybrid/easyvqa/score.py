"""Exact-match scorer for easy-VQA answers written by llava.eval.model_vqa(_loader).

    python -m llava_hybrid.easyvqa.score --question-file test.jsonl --answers-file answers.jsonl
"""
from __future__ import annotations

import argparse
import json
import string

from .data import QUESTION_TYPES


def normalize(text: str) -> str:
    """Lower-case, trim whitespace and surrounding punctuation: ' Yes.' -> 'yes'."""
    return text.strip().lower().strip(string.punctuation + string.whitespace)


def _read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def score(questions: list[dict], answers: list[dict]) -> dict:
    """Accuracy overall and per question type.

    questions: question-file lines with question_id, answer, type.
    answers: model_vqa lines with question_id, text. A question without an answer counts as wrong.
    Returns {"accuracy", "n", "answered", "per_type": {type: {"accuracy", "n"}}}.
    """
    if not questions:
        raise ValueError("the question file is empty")
    for key in ("question_id", "answer", "type"):
        if key not in questions[0]:
            raise ValueError(f"question-file lines need '{key}' (write them with prepare_easyvqa.py)")
    predicted = {a["question_id"]: normalize(a["text"]) for a in answers}
    hits: dict[str, list[int]] = {t: [] for t in QUESTION_TYPES}
    for q in questions:
        hit = int(predicted.get(q["question_id"]) == normalize(q["answer"]))
        hits.setdefault(q["type"], []).append(hit)
    all_hits = [h for v in hits.values() for h in v]
    return {
        "accuracy": sum(all_hits) / len(all_hits),
        "n": len(all_hits),
        "answered": sum(q["question_id"] in predicted for q in questions),
        "per_type": {t: {"accuracy": (sum(v) / len(v)) if v else None, "n": len(v)} for t, v in hits.items()},
    }


def text_prior(question_file: str) -> dict:
    """`score` of the best image-blind answerer: each test question gets the train split's most frequent
    answer to its template (colour and shape words masked, data.template). What a model scores
    without looking at the image; above it, the image was read."""
    from collections import Counter

    from .data import load_split, template

    by_template: dict[str, Counter] = {}
    for q in load_split("train")[0]:
        by_template.setdefault(template(q.text), Counter())[q.answer] += 1
    questions = _read_jsonl(question_file)
    answers = []
    for q in questions:
        seen = by_template.get(template(q["text"]))
        answers.append({"question_id": q["question_id"], "text": seen.most_common(1)[0][0] if seen else ""})
    return score(questions, answers)


def score_files(question_file: str, answers_file: str) -> dict:
    """`score` over a question file and an answers file (both JSONL)."""
    return score(_read_jsonl(question_file), _read_jsonl(answers_file))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--answers-file", required=True)
    args = parser.parse_args(argv)
    result = score_files(args.question_file, args.answers_file)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
