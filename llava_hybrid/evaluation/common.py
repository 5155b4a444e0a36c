"""What every benchmark module shares: JSON/JSONL reading and atomic writing, the score file that
`scripts/eval/all.sh` collects, and the argument parser skeleton of `python -m llava_hybrid.evaluation`.

A score file is one JSON object: {"benchmark", "metric" (what Table 1 reports), "value" (a number, or
null when the benchmark's own grader must run elsewhere), "n" (questions scored), "details", "note"}.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str) -> list[dict]:
    """Every non-empty line of a JSONL file, parsed; a bad line fails with its file and line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not a JSON line ({e})") from e
    return rows


def write_atomic(path: str, text: str) -> None:
    """Write text to path through a temporary file in the same folder (never a half-written file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj: Any, indent: int | None = 2) -> None:
    write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + ("\n" if indent else ""))


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def score_record(benchmark: str, metric: str, value: float | None, n: int, details: dict | None = None,
                 note: str = "") -> dict:
    """The score file's object (see the module docstring)."""
    return {"benchmark": benchmark, "metric": metric, "value": None if value is None else round(float(value), 4),
            "n": int(n), "details": details or {}, "note": note}


def write_score(path: str | None, record: dict) -> dict:
    """Print the headline and, when path is given, write the score file; returns the record."""
    value = "n/a" if record["value"] is None else f"{record['value']:.2f}"
    print(f"[{record['benchmark']}] {record['metric']}: {value} (n={record['n']})"
          + (f"  {record['note']}" if record["note"] else ""))
    if path:
        write_json(path, record)
    return record


def require_file(path: str, flag: str, hint: str = "") -> str:
    """path if it is a file, else a FileNotFoundError that names the flag (and where to get the file)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path!r}: no such file" + (f"; {hint}" if hint else ""))
    return path


def require_dir(path: str, flag: str, hint: str = "") -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag} {path!r}: no such folder" + (f"; {hint}" if hint else ""))
    return path
