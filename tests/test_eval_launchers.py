"""Every launcher in scripts/eval/ end to end on its smoke copy (LLaVA's unchanged model_vqa* scripts, the
merge, the benchmark's own scorer), through `all.sh --smoke` on the shipped teacher; sharding over two
"devices" on the shipped 25 % student; ScienceQA in pad mode on a grayscale photo (the grayscale_pad patch)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "playground" / "easyvqa" / "teacher"
STUDENT = REPO / "playground" / "easyvqa" / "student_25"
# benchmark -> (questions in its smoke copy, a line its official scorer / converter prints)
EXPECTED = {"mme": (18, "score"), "mmbench": (4, "[mmbench]"), "textvqa": (4, "Samples: 4"), "gqa": (6, "binary"),
            "mmvet": (3, "MM-Vet's GPT-4 evaluator"), "sqa": (3, "IMG-Accuracy"), "pope": (12, "Category: random"),
            "mmmu": (4, "[mmmu]"), "vqav2": (6, "total results: 6"), "mmstar": (4, "[mmstar]")}


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LLAVA_HYBRID_DISABLE", "CUDA_VISIBLE_DEVICES")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)
    return env


def _run(cmd, **env):
    proc = subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "eval_smoke"
    out = _run(["bash", "scripts/eval/all.sh", "--smoke", str(TEACHER)], EVAL_DIR=str(root))
    return root, out


def test_all_launchers_run_on_their_smoke_copies_and_score(smoke_run):
    root, out = smoke_run
    scores = root / "scores" / "teacher"
    for bench, (n, printed) in EXPECTED.items():
        record = json.loads((scores / f"{bench}.json").read_text())
        assert record["benchmark"] == bench and record["n"] == n, record
        assert printed in out, (bench, printed)
        if bench == "mmvet":
            assert record["value"] is None  # graded by GPT-4 elsewhere, never faked here
        else:
            assert 0 <= record["value"] <= (2000 if bench == "mme" else 100)
    row = json.loads((scores / "row.json").read_text())
    assert row["model"] == "teacher" and row["AVG_over"] == 9
    assert "| teacher |" in out


def test_the_launchers_write_each_benchmarks_own_output_files(smoke_run):
    root, _ = smoke_run
    assert len((root / "pope" / "answers" / "teacher" / "merge.jsonl").read_text().splitlines()) == 12
    assert (root / "MME" / "eval_tool" / "answers" / "teacher" / "existence.txt").is_file()
    assert json.loads((root / "gqa" / "data" / "testdev_balanced_predictions.json").read_text())[0].keys() == {
        "questionId", "prediction"}
    assert (root / "mmbench" / "answers_upload" / "mmbench_dev_20230712" / "teacher.xlsx").stat().st_size > 0
    assert set(json.loads((root / "mm-vet" / "results" / "teacher.json").read_text())) == {"v1_0", "v1_1", "v1_2"}
    upload = json.loads((root / "vqav2" / "answers_upload" / "llava_vqav2_mscoco_val2014" / "teacher.json").read_text())
    assert len(upload) == 6 and set(upload[0]) == {"question_id", "answer"}
    assert (root / "scienceqa" / "answers" / "teacher_result.json").is_file()


def test_a_launcher_shards_over_the_listed_devices_and_merges(smoke_run, tmp_path):
    root, _ = smoke_run
    out = _run(["bash", "scripts/eval/pope.sh", str(STUDENT)], EVAL_DIR=str(root), CUDA_VISIBLE_DEVICES="0,1",
               SCORE_DIR=str(tmp_path))
    answers = root / "pope" / "answers" / "student_25"
    assert sorted(p.name for p in answers.glob("2_*.jsonl")) == ["2_0.jsonl", "2_1.jsonl"]
    merged = [json.loads(line) for line in (answers / "merge.jsonl").read_text().splitlines()]
    asked = [json.loads(line) for line in (root / "pope" / "llava_pope_test.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in merged] == [q["question_id"] for q in asked]
    assert "Category: adversarial" in out and json.loads((tmp_path / "pope.json").read_text())["n"] == 12


def test_science_qa_in_pad_mode_takes_the_grayscale_photo(smoke_run, tmp_path):
    """image_aspect_ratio pad (TinyLLaVA's setting) + the coins photo (L mode): upstream LLaVA raises
    TypeError in expand2square; with the grayscale_pad patch the launcher runs and scores."""
    root, _ = smoke_run
    padded = tmp_path / "teacher-pad"
    shutil.copytree(TEACHER, padded)
    config = json.loads((padded / "config.json").read_text())
    config["image_aspect_ratio"] = "pad"
    (padded / "config.json").write_text(json.dumps(config))
    out = _run(["bash", "scripts/eval/sqa.sh", str(padded)], EVAL_DIR=str(root), SCORE_DIR=str(tmp_path))
    assert "IMG-Accuracy" in out and json.loads((tmp_path / "sqa.json").read_text())["n"] == 3


def test_a_launcher_names_missing_data_and_where_the_docs_say_to_get_it(tmp_path):
    proc = subprocess.run(["bash", "scripts/eval/gqa.sh", str(TEACHER)], cwd=REPO,
                          env=_env(EVAL_DIR=str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "missing LLaVA's GQA question file" in proc.stderr and "docs/evaluation.md" in proc.stderr
