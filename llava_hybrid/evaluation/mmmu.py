"""MMMU (validation): the release's parquet files -> LLaVA's question form -> answers -> MMMU's scoring.

Data (the MMMU dataset as its authors publish it): `MMMU/<Subject>/validation-00000-of-00001.parquet`
with columns id, question, options (a Python list as text), explanation, image_1 .. image_7 ({"bytes",
"path"}), img_type, answer, topic_difficulty, question_type ("multiple-choice" | "open"), subfield.
LLaVA has no MMMU script; `prepare` follows MMMU's own LLaVA-1.5 evaluation: the question with image_1
(a question whose options hold several images gets no image and, for multiple choice, a random letter as
MMMU does), multiple choice asked as "{question}\\n\\n(A) ..\\n(B) ..\\n\\nAnswer with the option's letter
from the given choices directly.", open questions as "{question}\\n\\nAnswer the question using a single
word or phrase.".

Scoring is MMMU's eval_utils rule, written here: multiple choice -> the letter named as "(X)" or " X ",
else (answers longer than five words) the option text it contains, the last one mentioned when several,
else a random letter (seed 42); open -> key sub-responses after "is", "so", "answer", "=" ..., the numbers
in them, normalised (numbers rounded to 2 decimals, text lower-cased), right if a normalised gold answer
is among / inside them. Accuracy over all questions, and per subject.
"""
from __future__ import annotations

import argparse
import ast
import glob
import io
import os
import random
import re
from collections import defaultdict

from .common import read_jsonl, require_dir, score_record, write_jsonl, write_score

MULTI_CHOICE = "{}\n\n{}\n\nAnswer with the option's letter from the given choices directly."
SHORT_ANSWER = "{}\n\nAnswer the question using a single word or phrase."


def load_split(data_dir: str, split: str = "validation") -> list[dict]:
    """Every question of the split across the subject folders, as dicts."""
    import pandas as pd

    files = sorted(glob.glob(os.path.join(require_dir(data_dir, "--data-dir"), "*", f"{split}-*.parquet")))
    if not files:
        raise FileNotFoundError(f"--data-dir {data_dir!r}: no <Subject>/{split}-*.parquet files (MMMU's layout)")
    rows = []
    for path in files:
        rows += pd.read_parquet(path).to_dict("records")
    return rows


def options_of(sample: dict) -> list[str]:
    return ast.literal_eval(sample["options"]) if isinstance(sample["options"], str) else list(sample["options"])


def index_to_answer(sample: dict) -> dict[str, str]:
    return {chr(ord("A") + i): option for i, option in enumerate(options_of(sample))}


def prompt(sample: dict) -> str:
    """MMMU's LLaVA-1.5 prompt for one sample."""
    if sample["question_type"] == "multiple-choice":
        listed = "".join(f"({letter}) {option}\n" for letter, option in index_to_answer(sample).items())
        return MULTI_CHOICE.format(sample["question"], listed)
    return SHORT_ANSWER.format(sample["question"])


def usable_image(sample: dict):
    """image_1's bytes, or None where several options are images (MMMU's process_single_sample)."""
    if sum(len(re.findall(r"<img='(.*?)'>", option)) for option in options_of(sample)) > 1:
        return None
    image = sample.get("image_1")
    return image.get("bytes") if isinstance(image, dict) else None


def prepare(data_dir: str, question_file: str, image_folder: str, split: str = "validation") -> int:
    """LLaVA question JSONL + images (PNG) for the questions that have an image; returns the count."""
    from PIL import Image

    rows = []
    os.makedirs(image_folder, exist_ok=True)
    for sample in load_split(data_dir, split):
        data = usable_image(sample)
        if data is None:
            continue
        name = f"{sample['id']}.png"
        Image.open(io.BytesIO(data)).convert("RGB").save(os.path.join(image_folder, name))
        rows.append({"question_id": sample["id"], "image": name, "text": prompt(sample),
                     "category": sample["question_type"]})
    write_jsonl(question_file, rows)
    return len(rows)


def parse_multi_choice(response: str, options: dict[str, str], rng: random.Random) -> str:
    for char in ",.!?;:'":
        response = response.strip(char)
    response = f" {response} "
    letters = list(options)
    candidates = [c for c in letters if f"({c})" in response]
    bracketed = bool(candidates)
    if not candidates:
        candidates = [c for c in letters if f" {c} " in response]
    by_text = False
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, text in options.items() if text.lower() in response.lower()]
        by_text = bool(candidates)
    if not candidates:
        return rng.choice(letters)
    if len(candidates) == 1:
        return candidates[0]
    if by_text:
        position = {c: response.lower().rfind(options[c].lower()) for c in candidates}
    else:
        position = {c: response.rfind(f"({c})" if bracketed else f" {c} ") for c in candidates}
    return max(candidates, key=lambda c: position[c])


_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _to_number(text: str):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def normalize(text) -> list:
    """MMMU's normalize_str: a number -> [rounded float]; text -> its lower-case form (a single character
    also with a space on either side, so it only matches as a word)."""
    text = str(text).strip()
    number = _to_number(text)
    if number is not None:
        return [round(number, 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def parse_open(response: str) -> list:
    """MMMU's parse_open_response: normalised key sub-responses and the numbers in them."""
    response = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for i, part in enumerate(parts):
        marks = indicators + (["="] if i == len(parts) - 1 else [])
        tails = [part.split(mark)[-1].strip() for mark in marks if mark in part]
        if tails:
            shortest = min(tails, key=len)
            if shortest not in (":", ",", ".", "!", "?", ";", "'"):
                keys.append(shortest)
    keys = keys or [response]
    predictions = list(keys)
    for key in keys:
        predictions += _NUMBER.findall(key)
    normalised = []
    for p in predictions:
        normalised += normalize(p)
    return list(dict.fromkeys(normalised))


def is_correct_open(gold, predictions: list) -> bool:
    golds = []
    for g in gold if isinstance(gold, list) else [gold]:
        golds += normalize(g)
    for p in predictions:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False


def score(data_dir: str, answers_file: str, split: str = "validation") -> tuple[float, int, dict]:
    answers = {row["question_id"]: row["text"] for row in read_jsonl(answers_file)}
    rng = random.Random(42)
    per_subject = defaultdict(list)
    unanswered = 0
    for sample in load_split(data_dir, split):
        text = answers.get(sample["id"])
        if sample["question_type"] == "multiple-choice":
            options = index_to_answer(sample)
            if text is None:  # no usable image: MMMU picks a random letter
                unanswered += 1
                choice = rng.choice(list(options))
            else:
                choice = parse_multi_choice(text, options, rng)
            ok = choice == sample["answer"]
        else:
            unanswered += text is None
            gold = sample["answer"]
            gold = ast.literal_eval(gold) if isinstance(gold, str) and gold.startswith("[") else gold
            ok = text is not None and is_correct_open(gold, parse_open(text))
        per_subject[sample["id"].split("_", 1)[-1].rsplit("_", 1)[0]].append(ok)  # validation_Art_Theory_3
    every = [ok for oks in per_subject.values() for ok in oks]
    details = {"per_subject": {k: 100 * sum(v) / len(v) for k, v in sorted(per_subject.items())},
               "questions_without_a_usable_image": unanswered}
    return 100 * sum(every) / len(every), len(every), details


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation mmmu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("prepare", help="parquet release -> LLaVA question JSONL + images")
    pre.add_argument("--data-dir", required=True)
    pre.add_argument("--question-file", required=True)
    pre.add_argument("--image-folder", required=True)
    pre.add_argument("--split", default="validation")
    ev = sub.add_parser("eval", help="answers -> MMMU accuracy")
    ev.add_argument("--data-dir", required=True)
    ev.add_argument("--answers-file", required=True)
    ev.add_argument("--split", default="validation")
    ev.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    if a.command == "prepare":
        n = prepare(a.data_dir, a.question_file, a.image_folder, a.split)
        print(f"[mmmu] {n} questions with an image -> {a.question_file}")
        return {"n": n}
    value, n, details = score(a.data_dir, a.answers_file, a.split)
    return write_score(a.score_file, score_record("mmmu", f"MMMU ({a.split}, accuracy)", value, n, details))
