"""The easy-VQA main job, shrunk: tiny data, a tiny teacher trained through the SFT entry, a 25 %
student distilled by scripts/distill_hybrid.py, answers by llava.eval.model_vqa, scores and report."""
import json

import pytest

from llava_hybrid.easyvqa import pipeline


def test_grid_and_distill_flags():
    grid = pipeline.student_grid(full=True)
    assert [s.ratio for s in grid["ratio"]] == ["0.125", "0.25", "0.5"]
    assert [s.positions for s in grid["position"]] == ["even", "begin", "middle", "end"]
    assert {s.init for s in grid["init"]} == {"attention", "random"}
    assert pipeline.student_grid(full=False) == {"main": [pipeline.StudentSpec()]}
    spec = pipeline.StudentSpec(loss="ce", init="random")
    argv = pipeline.distill_argv(spec, "T", {"train": "d.json", "image_folder": "im"}, "o", pipeline.RunConfig())
    flags = dict(zip(argv[::2], argv[1::2]))
    assert (flags["--distill_alpha"], flags["--distill_beta"], flags["--distill_gamma"]) == ("0", "0", "1")
    assert flags["--init_from_attention"] == "False" and flags["--mm_hybrid_ratio"] == "0.25"


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    cfg = pipeline.smoke_config(str(tmp_path / "run"), str(tmp_path / "docs"))
    results = pipeline.run(cfg)
    saved = json.loads((tmp_path / "docs" / "easyvqa" / "results.json").read_text())
    assert saved["teacher"]["n"] == results["teacher"]["n"] == 6
    student = saved["students"]["0.25"]
    for r in (saved["teacher"], student):
        assert 0.0 <= r["accuracy"] <= 1.0 and r["answered"] == r["n"]
        assert set(r["per_type"]) >= {"yes/no", "shape", "color"}
    assert saved["teacher"]["loss_curve"], "the teacher's SFT logged no loss"
    # the teacher learned something in 20 tiny steps: its loss fell
    curve = [loss for _, loss in saved["teacher"]["loss_curve"]]
    assert curve[-1] < curve[0]
    cfg_student = json.loads((tmp_path / "run" / "students" / pipeline.StudentSpec().name / "config.json").read_text())
    assert cfg_student["mamba_layers"] == [0]
    md = (tmp_path / "docs" / "easyvqa.md").read_text()
    assert "## Teacher" in md and "Not run in this report" in md
    assert saved["runtime_s"] > 0 and saved["machine"]
