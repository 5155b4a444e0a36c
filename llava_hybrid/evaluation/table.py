"""One Table-1-style row from the score files the launchers wrote: printed as a Markdown table and written
as JSON. Columns in the paper's order (MME-P, MMB, VQA^T, GQA, MM-Vet, SQA-I, POPE, MMMU, VQAv2) + MMStar;
a benchmark without a score (not run, or graded elsewhere: MM-Vet's GPT-4, VQAv2 test-dev's server) shows
"-" and its note. AVG is over the columns that have a number, and says how many.
"""
from __future__ import annotations

import argparse
import os

from .common import read_json, write_json

COLUMNS = [("mme", "MME-P"), ("mmbench", "MMB"), ("textvqa", "VQA^T"), ("gqa", "GQA"), ("mmvet", "MM-Vet"),
           ("sqa", "SQA-I"), ("pope", "POPE"), ("mmmu", "MMMU"), ("vqav2", "VQAv2"), ("mmstar", "MMStar")]


def collect(score_dir: str) -> dict:
    """benchmark -> score record, for every <benchmark>.json in score_dir."""
    return {name: read_json(os.path.join(score_dir, f"{name}.json")) for name, _ in COLUMNS
            if os.path.isfile(os.path.join(score_dir, f"{name}.json"))}


def row(model: str, scores: dict) -> dict:
    values = {label: (scores[name]["value"] if name in scores else None) for name, label in COLUMNS}
    numbers = [v for v in values.values() if v is not None]
    return {"model": model, **values, "AVG": sum(numbers) / len(numbers) if numbers else None,
            "AVG_over": len(numbers), "n": {label: scores[name]["n"] for name, label in COLUMNS if name in scores},
            "notes": {label: scores[name]["note"] for name, label in COLUMNS if name in scores and scores[name]["note"]}}


def markdown(rows: list[dict]) -> str:
    labels = [label for _, label in COLUMNS] + ["AVG"]
    lines = ["| model | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for r in rows:
        cells = ["-" if r[label] is None else f"{r[label]:.1f}" for label in labels]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation table", description=__doc__)
    p.add_argument("--score-dir", required=True, help="folder of <benchmark>.json score files")
    p.add_argument("--model", required=True, help="the row's name")
    p.add_argument("--out", default=None, help="JSON file for the row")
    a = p.parse_args(argv)
    result = row(a.model, collect(a.score_dir))
    print(markdown([result]))
    for label, note in result["notes"].items():
        print(f"  {label}: {note}")
    if a.out:
        write_json(a.out, result)
    return result
