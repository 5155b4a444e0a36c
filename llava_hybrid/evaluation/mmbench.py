"""MMBench: LLaVA answers -> the submission spreadsheet (LLaVA's convert_mmbench_for_submission) and, on
the dev split (answers public), the accuracy with MMBench's rule-based choice extraction.

Data (OpenCompass): `mmbench/mmbench_dev_20230712.tsv`, one row per question: index, question, hint, A, B, C,
D, answer, category, image (base64), source, l2-category, comment, split. `llava.eval.model_vqa_mmbench`
reads it directly (`--all-rounds` asks each question once per circular shift of its options).

Conversion (LLaVA's rule): the TSV without hint, category, source, image, comment, l2-category, a
"prediction" column inserted at position 6, filled by index; written as .xlsx for the evaluation server.
Dev scoring: the prediction's choice is the one option letter it names (punctuation split off), else the
one option whose text it contains, else none (MMBench then asks ChatGPT; here it counts as wrong and is
reported as unmatched). With several rounds per question (circular evaluation) a question is right only
if every round is.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from collections import defaultdict

from .common import read_jsonl, require_file, score_record, write_score

LETTERS = "ABCD"


def _present(value) -> bool:
    return not (value is None or (isinstance(value, float) and math.isnan(value))
                or (isinstance(value, str) and value.strip().lower() in ("nan", "none", "")))


def extract_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter an answer names (see the module docstring), or None."""
    words = re.sub(r"[.()\[\],:;!*#{}]", " ", text).split()
    named = [letter for letter in options if letter in words]
    if len(named) == 1:
        return named[0]
    contained = [letter for letter, option in options.items() if option.lower() in text.lower()]
    return contained[0] if len(contained) == 1 else None


def convert(annotation_file: str, answers_file: str, upload_file: str):
    """The submission spreadsheet (.xlsx, openpyxl) of LLaVA's converter; returns the frame."""
    import pandas as pd

    df = pd.read_table(require_file(annotation_file, "--annotation-file"))
    out = df.drop(columns=["hint", "category", "source", "image", "comment", "l2-category"])
    out.insert(6, "prediction", None)
    for answer in read_jsonl(require_file(answers_file, "--answers-file")):
        out.loc[df["index"] == answer["question_id"], "prediction"] = answer["text"]
    os.makedirs(os.path.dirname(os.path.abspath(upload_file)), exist_ok=True)
    out.to_excel(upload_file, index=False, engine="openpyxl")
    return df


def dev_accuracy(df, answers: list[dict]) -> tuple[float, int, dict]:
    """Accuracy (circular where rounds > 1) over the answered questions; per category and l2-category."""
    rows = {int(r["index"]): r for _, r in df.iterrows()}
    rounds = defaultdict(list)
    unmatched = 0
    for answer in answers:
        row = rows[int(answer["question_id"])]
        # the options as asked in this round (model_vqa_mmbench letters them A, B, ... after each shift)
        texts = answer.get("options") or [row[c] for c in LETTERS if _present(row.get(c))]
        options = dict(zip(LETTERS, texts))
        truth_text = row[row["answer"]]
        truth = next(letter for letter, text in options.items() if text == truth_text)
        choice = extract_choice(answer["text"], options)
        unmatched += choice is None
        rounds[int(answer["question_id"])].append(choice == truth)
    correct = {index: all(oks) for index, oks in rounds.items()}
    by_cat, by_l2 = defaultdict(list), defaultdict(list)
    for index, ok in correct.items():
        by_cat[rows[index]["category"]].append(ok)
        by_l2[rows[index]["l2-category"]].append(ok)
    details = {"per_category": {k: 100 * sum(v) / len(v) for k, v in sorted(by_cat.items())},
               "per_l2_category": {k: 100 * sum(v) / len(v) for k, v in sorted(by_l2.items())},
               "unmatched_answers": unmatched, "circular": any(len(v) > 1 for v in rounds.values())}
    return 100 * sum(correct.values()) / len(correct), len(correct), details


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation mmbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotation-file", required=True, help="mmbench_<split>.tsv")
    p.add_argument("--answers-file", required=True, help="llava.eval.model_vqa_mmbench answers")
    p.add_argument("--upload-file", required=True, help="the .xlsx to write for the evaluation server")
    p.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    df = convert(a.annotation_file, a.answers_file, a.upload_file)
    if "answer" not in df.columns or not df["answer"].map(_present).all():
        return write_score(a.score_file, score_record("mmbench", "MMBench (accuracy)", None, len(df),
                                                      note=f"test split: upload {a.upload_file} to MMBench's server"))
    value, n, details = dev_accuracy(df, read_jsonl(a.answers_file))
    return write_score(a.score_file, score_record("mmbench", "MMBench (accuracy, dev)", value, n, details))
