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
    main = pipeline.student_grid(full=False)
    assert list(main) == ["ratio"] and pipeline.StudentSpec() in main["ratio"] and len(main["ratio"]) == 3
    with pytest.raises(ValueError, match="main student"):
        pipeline.student_grid(full=False, ratios=("0.5",))
    with pytest.raises(SystemExit):
        pipeline.parse_args(["--ratios", "0.3,0.25"])
    spec = pipeline.StudentSpec(loss="ce", init="random")
    argv = pipeline.distill_argv(spec, "T", {"train": "d.json", "image_folder": "im"}, "o", pipeline.RunConfig())
    flags = dict(zip(argv[::2], argv[1::2]))
    assert (flags["--distill_alpha"], flags["--distill_beta"], flags["--distill_gamma"]) == ("0", "0", "1")
    assert flags["--init_from_attention"] == "False" and flags["--mm_hybrid_ratio"] == "0.25"


def test_ablations_carried_only_from_the_same_teacher_and_settings(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"weights-1")
    config = {"teacher_sha256": pipeline.teacher_fingerprint(str(teacher)), "test_questions": 500,
              "distill_steps": 150, "distill_batch": 8, "distill_lr": 1e-3, "finished": "then"}
    previous = {"teacher": {}, "students": {}, "config": config, "runtime_s": 9.0,
                "loss_ablation": {"ce": {"accuracy": 0.5}}, "init_ablation": {"random": {"accuracy": 0.4}}}
    prev_file = tmp_path / "results.json"
    prev_file.write_text(json.dumps(previous))
    now = {"teacher": {}, "students": {}, "config": dict(config, finished="now")}
    assert pipeline.carry_ablations(now, str(prev_file)) == ["loss_ablation", "init_ablation"]
    assert now["loss_ablation"] == previous["loss_ablation"] and now["carried_from"]["run_finished"] == "then"
    # another teacher (weights changed) or other distillation settings: nothing is carried
    (teacher / "model.safetensors").write_bytes(b"weights-2")
    other = {"teacher": {}, "config": dict(config, teacher_sha256=pipeline.teacher_fingerprint(str(teacher)))}
    assert pipeline.carry_ablations(other, str(prev_file)) == [] and "loss_ablation" not in other
    assert pipeline.carry_ablations({"config": dict(config, distill_steps=100)}, str(prev_file)) == []
    assert pipeline.carry_ablations({"config": config}, str(tmp_path / "none.json")) == []


def test_ablations_carried_twice_keep_the_full_runs_provenance(tmp_path):
    """Two plain runs after a --full run: the second still names the --full run, not the first plain one."""
    from llava_hybrid.easyvqa.report import write_report

    config = {"teacher_sha256": "t", "test_questions": 500, "distill_steps": 150, "distill_batch": 8,
              "distill_lr": 1e-3}
    results_file = tmp_path / "easyvqa" / "results.json"
    results_file.parent.mkdir()
    teacher = {"accuracy": 0.9, "n": 500, "per_type": {}}
    full = {"teacher": teacher, "students": {}, "config": dict(config, full=True, finished="09:00:00"),
            "runtime_s": 2123.0, "loss_ablation": {"ce": {"accuracy": 0.5, "n": 500, "per_type": {}}}}
    results_file.write_text(json.dumps(full))
    for finished, runtime in (("10:00:00", 558.0), ("11:00:00", 560.0)):  # two plain runs, one after the other
        plain = {"teacher": teacher, "students": {}, "config": dict(config, full=False, finished=finished),
                 "runtime_s": runtime}
        assert pipeline.carry_ablations(plain, str(results_file)) == ["loss_ablation"]
        write_report(plain, str(tmp_path))
    assert plain["carried_from"] == {"keys": ["loss_ablation"], "run_finished": "09:00:00", "runtime_s": 2123.0}
    report = (tmp_path / "easyvqa.md").read_text()
    assert "From the `--full` run finished 09:00:00" in report and "10:00:00" not in report


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


def test_orderings_within_sampling_noise_are_called_unresolved():
    from llava_hybrid.easyvqa.report import ordering_lines, standard_error

    se = standard_error({"accuracy": 0.87, "n": 1000})
    assert abs(se - 1.063) < 1e-3
    close = {"attention": {"accuracy": 0.865, "n": 1000}, "random": {"accuracy": 0.870, "n": 1000}}
    apart = {"attention": {"accuracy": 0.870, "n": 1000}, "random": {"accuracy": 0.830, "n": 1000}}
    assert "not resolved" in ordering_lines("init_ablation", close, se)[0]
    assert "order differs" in ordering_lines("init_ablation", close, se)[0]
    assert "not resolved" not in ordering_lines("init_ablation", apart, se)[0]
    assert "Same order." in ordering_lines("init_ablation", apart, se)[0]
