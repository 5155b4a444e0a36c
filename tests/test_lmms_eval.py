"""lmms-eval through its entry point for external models, offline, on CPU: `lmms-eval --model llava_hybrid`
on a local easy-VQA task (generate_until + loglikelihood) gives a score for the shipped teacher and the
25 % hybrid student with the same model class; batched requests give what single ones give."""
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip(
    "lmms_eval", reason="lmms-eval is installed on the transformers-5 lane only (its wheel needs transformers >= "
                        "4.39.2; lane 4 is LLaVA's 4.37.2), see scripts/setup.sh")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "playground" / "easyvqa" / "teacher"
STUDENT = REPO / "playground" / "easyvqa" / "student_25"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    from llava_hybrid.evaluation.lmms_task import write_task

    return write_task(str(tmp_path_factory.mktemp("lmms") / "tasks"), questions=12)


def test_the_model_is_registered_through_the_entry_point_group():
    names = [ep.name for ep in importlib.metadata.entry_points(group="lmms_eval.models")]
    assert "llava_hybrid" in names
    from lmms_eval.models import get_model

    from llava_hybrid.evaluation.lmms import LlavaHybrid

    assert get_model("llava_hybrid") is LlavaHybrid and get_model("matvlm") is LlavaHybrid


@pytest.mark.parametrize("checkpoint", [TEACHER, STUDENT], ids=["teacher", "hybrid-25"])
def test_lmms_eval_cli_scores_a_local_task_on_cpu(task_dir, tmp_path, checkpoint):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "llava_hybrid",
         "--model_args", f"pretrained={checkpoint},device=cpu,dtype=float32", "--tasks",
         "easyvqa_smoke_gen,easyvqa_smoke_mc", "--include_path", task_dir, "--batch_size", "4",
         "--output_path", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "exact_match" in log and "acc" in log  # lmms-eval's results table
    results = json.loads(next(out.rglob("*results.json")).read_text())["results"]
    gen, mc = results["easyvqa_smoke_gen"], results["easyvqa_smoke_mc"]
    assert 0.0 <= gen["exact_match,none"] <= 1.0 and 0.0 <= mc["acc,none"] <= 1.0
    # the easy-VQA models answer these (chance over 13 answers: 0.08)
    assert gen["exact_match,none"] > 0.25 and mc["acc,none"] > 0.25


def _requests(model, task_dir, kind):
    """lmms-eval Instances over the task's documents, as its evaluator builds them."""
    from lmms_eval.api.instance import Instance

    from llava_hybrid.evaluation import lmms_task

    docs = [json.loads(line) for line in open(os.path.join(task_dir, "data.jsonl"))]
    model.task_dict = {"t": {"test": docs}}
    if kind == "gen":
        return [Instance("generate_until", (lmms_task.doc_to_text(d), {"max_new_tokens": 4, "until": ["\n"]},
                                            lmms_task.doc_to_visual, i, "t", "test"), idx=0,
                         metadata={"task": "t", "doc_id": i, "repeats": 1})
                for i, d in enumerate(docs)]
    return [Instance("loglikelihood", (lmms_task.doc_to_text(d), answer, lmms_task.doc_to_visual, i, "t", "test"),
                     idx=0, metadata={"task": "t", "doc_id": i, "repeats": 1})
            for i, d in enumerate(docs) for answer in ("yes", d["answer"])]


@pytest.mark.parametrize("checkpoint", [TEACHER, STUDENT], ids=["teacher", "hybrid-25"])
def test_batched_requests_equal_single_requests(task_dir, checkpoint):
    from llava_hybrid.evaluation.lmms import LlavaHybrid

    single = LlavaHybrid(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=1)
    batched = LlavaHybrid(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=5)
    gen = _requests(single, task_dir, "gen")
    _requests(batched, task_dir, "gen")
    assert batched.generate_until(gen) == single.generate_until(gen)
    ll = _requests(single, task_dir, "ll")
    _requests(batched, task_dir, "ll")
    one, many = single.loglikelihood(ll), batched.loglikelihood(ll)
    assert [g for _, g in one] == [g for _, g in many]
    assert all(abs(a - b) < 1e-3 for (a, _), (b, _) in zip(one, many))
    assert all(nll >= 0 for nll, _ in one)  # lmms-eval's loss convention (its multiple_choice takes the argmin)
