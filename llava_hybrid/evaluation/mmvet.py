"""MM-Vet: LLaVA answers -> the results file MM-Vet's GPT-4 grader reads (LLaVA's convert_mmvet_for_eval).

Data (MM-Vet release): `mm-vet/mm-vet.json` ({"v1_0": {"imagename", "capability", "question", "answer"},
...}) and `mm-vet/images/`; LLaVA's `llava-mm-vet.jsonl` asks each question (question_id = the number
after "v1_"). The results file is {"v1_<question_id>": answer text}. MM-Vet scores open answers with
GPT-4 (its evaluator, or the online grader); nothing here calls a judge, so the score is left to it.
"""
from __future__ import annotations

import argparse

from .common import read_jsonl, require_file, score_record, write_json, write_score


def convert(src: str, dst: str) -> dict:
    results = {f"v1_{row['question_id']}": row["text"] for row in read_jsonl(require_file(src, "--src"))}
    write_json(dst, results)
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation mmvet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="LLaVA answers (llava.eval.model_vqa)")
    p.add_argument("--dst", required=True, help="results JSON for MM-Vet's grader")
    p.add_argument("--score-file", default=None)
    a = p.parse_args(argv)
    results = convert(a.src, a.dst)
    return write_score(a.score_file, score_record("mmvet", "MM-Vet (GPT-4 graded)", None, len(results),
                                                  note=f"grade {a.dst} with MM-Vet's GPT-4 evaluator"))
