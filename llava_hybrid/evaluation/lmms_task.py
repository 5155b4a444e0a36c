"""A local lmms-eval task on easy-VQA test questions (images and answers shipped in the easy-vqa package),
for running lmms-eval offline through this project's model: two tasks in one folder for `--include_path`.

    python -m llava_hybrid.evaluation lmms-task --out runs/lmms_task --questions 24
    lmms-eval --model llava_hybrid --model_args pretrained=playground/easyvqa/teacher,device=cpu,dtype=float32 \\
        --tasks easyvqa_smoke_gen,easyvqa_smoke_mc --include_path runs/lmms_task --batch_size 4

easyvqa_smoke_gen   generate_until, exact match of the lower-cased answer (the easy-VQA questions as asked
                    in training: lower case, no suffix)
easyvqa_smoke_mc    multiple_choice (loglikelihood of each of the 13 easy-VQA answers), accuracy
The data is a local JSON-lines file read by `datasets`' json builder: nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os

from .common import write_atomic, write_jsonl

ANSWERS = ["yes", "no", "circle", "rectangle", "triangle", "red", "green", "blue", "black", "gray", "teal",
           "brown", "yellow"]

_UTILS = '''"""doc_to_* functions of the easy-VQA smoke tasks (written by llava_hybrid.evaluation.lmms_task)."""
from llava_hybrid.evaluation.lmms_task import doc_to_choice, doc_to_target_index, doc_to_text, doc_to_visual, process_results  # noqa: F401
'''

_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
{target}
metadata:
  - version: 0.0
"""

_GEN = """doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true"""

_MC = """doc_to_choice: !function utils.doc_to_choice
doc_to_target: !function utils.doc_to_target_index
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true"""


def doc_to_visual(doc):
    from PIL import Image

    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_choice(doc):
    return list(ANSWERS)


def doc_to_target_index(doc):
    return ANSWERS.index(doc["answer"])


def process_results(doc, results):
    return {"exact_match": float(results[0].strip().lower().rstrip(".") == doc["answer"])}


def write_task(out: str, questions: int = 24) -> str:
    """The task folder (two YAMLs, utils.py, data.jsonl over `questions` easy-VQA test questions, every
    11th, so all question kinds appear); returns out."""
    import easy_vqa

    texts, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    picked = list(range(0, len(texts), 11))[:questions]
    data = os.path.abspath(os.path.join(out, "data.jsonl"))
    write_jsonl(data, [{"question": texts[i], "answer": answers[i], "image": os.path.abspath(paths[image_ids[i]])}
                       for i in picked])
    write_atomic(os.path.join(out, "utils.py"), _UTILS)
    for task, output_type, target in (("easyvqa_smoke_gen", "generate_until", _GEN),
                                      ("easyvqa_smoke_mc", "multiple_choice", _MC)):
        write_atomic(os.path.join(out, f"{task}.yaml"),
                     _YAML.format(task=task, data=data, output_type=output_type, target=target))
    return out


def main(argv=None) -> str:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation lmms-task", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--questions", type=int, default=24)
    a = p.parse_args(argv)
    print(f"[lmms-task] easyvqa_smoke_gen, easyvqa_smoke_mc -> {write_task(a.out, a.questions)}")
    return a.out
