"""MME: answers -> the eval_tool's per-category result files -> MME's calculation (perception/cognition).

Data (MME's release, as its authors distribute it): `MME_Benchmark_release_version/<category>/` holding
either `<image>.{png,jpg}` + `<image>.txt` side by side, or `images/` + `questions_answers_YN/`; each txt
has two lines `question<TAB>Yes|No` for its image. LLaVA's question file `llava_mme.jsonl` has
question_id = image = `<category>/[images/]<file>`, the question without " Please answer yes or no." and
"\\nAnswer the question using a single word or phrase." appended.

Scoring is MME's calculation.py rule: a prediction is "yes"/"no" if it is exactly that (lower-cased), else
if its first four characters contain "yes" (then "no"), else "other"; per category acc = correct
questions / all, acc+ = images with both questions right / images; score = 100 acc + 100 acc+; the
perception score sums its ten categories, cognition its four. Categories absent from a copy are listed,
not counted.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict

from .common import read_jsonl, require_dir, require_file, score_record, write_atomic, write_score

PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR"]
COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
YES_NO = " Please answer yes or no."
LLAVA_SUFFIX = "Answer the question using a single word or phrase."


def category_dirs(category_dir: str) -> tuple[str, str]:
    """(image folder, question folder) of one category in either release layout."""
    if os.path.isdir(os.path.join(category_dir, "images")):
        return os.path.join(category_dir, "images"), os.path.join(category_dir, "questions_answers_YN")
    return category_dir, category_dir


def ground_truth(data_dir: str) -> dict[tuple[str, str, str], str]:
    """(category, txt file name, question with ' Please answer yes or no.') -> 'Yes' | 'No'."""
    truth = {}
    for category in sorted(os.listdir(require_dir(data_dir, "--data-dir"))):
        category_dir = os.path.join(data_dir, category)
        if not os.path.isdir(category_dir):
            continue
        _images, questions = category_dirs(category_dir)
        for name in sorted(os.listdir(questions)):
            if not name.endswith(".txt"):
                continue
            with open(os.path.join(questions, name), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        question, answer = line.rstrip("\n").split("\t")
                        truth[(category, name, question)] = answer
    return truth


def convert(answers_file: str, data_dir: str, results_dir: str) -> list[str]:
    """LLaVA answers JSONL -> `<results_dir>/<category>.txt` lines `image<TAB>question<TAB>gt<TAB>pred`
    (the eval_tool's input); returns the categories written."""
    truth = ground_truth(data_dir)
    per_category = defaultdict(list)
    for answer in read_jsonl(require_file(answers_file, "--answers-file")):
        category = answer["question_id"].split("/")[0]
        image = answer["question_id"].split("/")[-1]
        txt = os.path.splitext(image)[0] + ".txt"
        question = answer["prompt"].replace(LLAVA_SUFFIX, "").strip()
        if YES_NO.strip() not in question:
            question += YES_NO
        key = (category, txt, question)
        if key not in truth:  # a few of MME's own txt lines have two spaces before "Please" (LLaVA's rule)
            key = (category, txt, question.replace(YES_NO, " " + YES_NO))
        if key not in truth:
            raise KeyError(f"--answers-file: {answer['question_id']!r} asks {question!r}, which is not in "
                           f"{os.path.join(data_dir, category)}")
        text = answer["text"].replace("\t", " ").replace("\n", " ")
        per_category[category].append("\t".join((image, question, truth[key], text)))
    for category, lines in per_category.items():
        write_atomic(os.path.join(results_dir, f"{category}.txt"), "".join(line + "\n" for line in lines))
    return sorted(per_category)


def parse_prediction(text: str) -> str:
    """MME's rule: 'yes' / 'no' / 'other' from a free-form answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def category_score(lines: list[str]) -> dict:
    """acc, acc+ and score (100 acc + 100 acc+) of one category's result lines."""
    by_image = defaultdict(list)
    for line in lines:
        image, _question, truth, prediction = line.split("\t")
        by_image[image].append(truth.lower() == parse_prediction(prediction))
    questions = [ok for oks in by_image.values() for ok in oks]
    acc = sum(questions) / len(questions)
    acc_plus = sum(all(oks) for oks in by_image.values()) / len(by_image)
    return {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus, "questions": len(questions),
            "images": len(by_image)}


def calculate(results_dir: str) -> dict:
    """Perception and cognition totals over the categories present in results_dir."""
    out = {"categories": {}, "missing": []}
    for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
        total = 0.0
        for name in names:
            path = os.path.join(results_dir, f"{name}.txt")
            if not os.path.isfile(path):
                out["missing"].append(name)
                continue
            with open(path, encoding="utf-8") as f:
                result = category_score([line for line in f.read().splitlines() if line])
            out["categories"][name] = result
            total += result["score"]
        out[group] = total
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation mme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answers-file", required=True, help="merged LLaVA answers (llava.eval.model_vqa_loader)")
    p.add_argument("--data-dir", required=True, help="MME_Benchmark_release_version")
    p.add_argument("--results-dir", required=True, help="where the eval_tool result files go")
    p.add_argument("--score-file", default=None)
    args = p.parse_args(argv)
    convert(args.answers_file, args.data_dir, args.results_dir)
    scores = calculate(args.results_dir)
    for name, result in scores["categories"].items():
        print(f"  {name:<24} score {result['score']:7.2f}  acc {result['acc']:.3f}  acc+ {result['acc_plus']:.3f}")
    n = sum(r["questions"] for r in scores["categories"].values())
    note = f"categories absent from this copy: {', '.join(scores['missing'])}" if scores["missing"] else ""
    return write_score(args.score_file, score_record("mme", "MME-P (perception score)", scores["perception"], n,
                                                     scores, note))
