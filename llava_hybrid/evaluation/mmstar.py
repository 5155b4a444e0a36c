"""MMStar: the release's parquet -> LLaVA's question form -> answers -> accuracy per core capability.

Data (MMStar as its authors publish it): `mmstar/mmstar.parquet` with columns index, question (the options
inside it: "Options: A: ..., B: ..."), image ({"bytes", "path"}), answer (a letter), category (one of six
core capabilities), l2_category, meta_info. LLaVA has no MMStar script; `prepare` asks each question with
"\\nAnswer with the option's letter from the given choices directly." (lmms-eval's MMStar prompt).

Scoring is lmms-eval's MMStar rule: right when the answer's first character is the letter, or it starts
"(X", "option X" or "the answer is X" (case-insensitive); accuracy per l2 category, averaged into each
core capability, and the average over the capabilities present (MMStar's headline).
"""
from __future__ import annotations

import argparse
import io
import os
from collections import defaultdict

from .common import read_jsonl, require_file, score_record, write_jsonl, write_score

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def load(parquet_file: str) -> list[dict]:
    import pandas as pd

    return pd.read_parquet(require_file(parquet_file, "--data-file", "MMStar's mmstar.parquet")).to_dict("records")


def prepare(parquet_file: str, question_file: str, image_folder: str) -> int:
    from PIL import Image

    os.makedirs(image_folder, exist_ok=True)
    rows = []
    for sample in load(parquet_file):
        name = f"{sample['index']}.png"
        Image.open(io.BytesIO(sample["image"]["bytes"])).convert("RGB").save(os.path.join(image_folder, name))
        rows.append({"question_id": int(sample["index"]), "image": name, "text": sample["question"] + POST_PROMPT,
                     "category": sample["category"]})
    write_jsonl(question_file, rows)
    return len(rows)


def exact_match(prediction: str, answer: str) -> bool:
    truth = answer.lower().strip().replace("\n", " ")
    text = prediction.lower().strip().replace("\n", " ")
    for prefix in ("", "(", "option ", "the answer is "):
        if text.startswith(prefix) and len(text) > len(prefix) and text[len(prefix)] == truth:
            return True
    return False


def score(parquet_file: str, answers_file: str) -> tuple[float, int, dict]:
    answers = {int(row["question_id"]): row["text"] for row in read_jsonl(answers_file)}
    per_l2 = defaultdict(list)
    for sample in load(parquet_file):
        ok = exact_match(answers.get(int(sample["index"]), ""), sample["answer"])
        per_l2[(sample["category"], sample["l2_category"])].append(ok)
    per_category = defaultdict(list)
    for (category, _l2), oks in per_l2.items():
        per_category[category].append(100 * sum(oks) / len(oks))
    categories = {c: sum(v) / len(v) for c, v in sorted(per_category.items())}
    n = sum(len(v) for v in per_l2.values())
    details = {"per_category": categories, "per_l2_category": {f"{c}/{l2}": 100 * sum(v) / len(v)
                                                               for (c, l2), v in sorted(per_l2.items())},
               "overall_accuracy": 100 * sum(sum(v) for v in per_l2.values()) / n}
    return sum(categories.values()) / len(categories), n, details


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation mmstar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("prepare", help="mmstar.parquet -> LLaVA question JSONL + images")
    pre.add_argument("--data-file", required=True)
    pre.add_argument("--question-file", required=True)
    pre.add_argument("--image-folder", required=True)
    ev = sub.add_parser("eval", help="answers -> MMStar accuracy")
    ev.add_argument("--data-file", required=True)
    ev.add_argument("--answers-file", required=True)
    ev.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    if a.command == "prepare":
        n = prepare(a.data_file, a.question_file, a.image_folder)
        print(f"[mmstar] {n} questions -> {a.question_file}")
        return {"n": n}
    value, n, details = score(a.data_file, a.answers_file)
    return write_score(a.score_file, score_record("mmstar", "MMStar (accuracy, mean of capabilities)", value, n,
                                                  details))
