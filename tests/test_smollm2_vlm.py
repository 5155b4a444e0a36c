"""The VLM part of the real-backbone recipe (`python -m llava_hybrid.smollm2 vlm --smoke`) on SmolLM2 cut to its
first 4 layers: SFT through scripts/train_sft.py into LLaVA's own LlavaLlamaForCausalLM (chatml template), the
25 % student through scripts/distill_hybrid.py (--mamba_init attention_calibrated), both scored through
llava.eval.model_vqa; the report's vlm section merged beside an existing text section. Both lanes: lane 4
(transformers 4.37.2, no GGUF loader) runs it on the checkpoint lane 5 converted (the smollm2_checkpoint fixture
skips, saying so, where there is none)."""
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_vlm_recipe_runs_end_to_end_on_smollm2_cut_to_four_layers(smollm2_checkpoint, tmp_path):
    from llava_hybrid.smollm2.vlm import run_vlm, smoke_config, write_results

    docs = tmp_path / "docs"
    (docs / "real_backbone").mkdir(parents=True)
    shipped = json.loads((REPO / "docs" / "real_backbone" / "results.json").read_text())  # the measured text part
    text, text_machine, text_runtime = shipped["text"], shipped["machine"], shipped["runtime_s"]["text"]
    (docs / "real_backbone" / "results.json").write_text(json.dumps({**shipped, "vlm": None}))
    cfg = smoke_config(str(tmp_path / "out"), str(docs))
    cfg.checkpoint = smollm2_checkpoint
    vlm = run_vlm(cfg)

    teacher, student = vlm["teacher"], vlm["students"]["0.25"]
    assert teacher["n"] == student["n"] == vlm["text_prior"]["n"] == 4 and teacher["answered"] == student["answered"] == 4
    assert student["num_layers"] == 4 and student["layers"] == student["planned_layers"] == [0]
    assert student["spec"]["init"] == "attention_calibrated" and student["loss_weights"] == {"alpha": 1, "beta": 1, "gamma": 0}
    assert len(teacher["loss_curve"]) == cfg.sft_steps and all(v == v for _, v in teacher["loss_curve"])  # no NaN
    assert len(student["loss_terms"]["loss_layer"]) == cfg.distill_steps and len(student["loss_terms"]["loss_prob"]) == cfg.distill_steps
    # the teacher is LLaVA's own class, the student the plugin's LLaVA hybrid class; both stop at <|im_end|>
    out = tmp_path / "out"
    assert json.loads((out / "teacher" / "config.json").read_text())["model_type"] == "llava_llama"
    saved = json.loads((out / "students" / "r0.25-even-prob_layer-attention_calibrated" / "config.json").read_text())
    assert saved["model_type"] == "llava_hybrid_llama" and saved["mamba_layers"] == [0]
    for name in ("teacher", "r0.25-even-prob_layer-attention_calibrated"):
        answers = [json.loads(line) for line in (out / "eval" / name / "answers.jsonl").read_text().splitlines()]
        assert len(answers) == 4 and all(0 < len(a["text"]) < 40 for a in answers), answers  # short answers: it stopped

    results = write_results(vlm, cfg)
    assert results["text"] == text  # the text part and its provenance kept
    assert results["machine"]["text"] == (text_machine if isinstance(text_machine, str) else text_machine["text"])
    assert results["runtime_s"] == {"text": text_runtime, "vlm": vlm["runtime_s"]}
    assert "torch threads 1" in results["machine"]["vlm"]
    md = (docs / "real_backbone.md").read_text()
    assert "## Text" in md and "## VLM" in md and "25% hybrid student" in md and "text prior (no image)" in md
    assert (docs / "real_backbone" / "vlm_loss.png").is_file()
    # a second run reuses the finished SFT and distillation (same commands): nothing is trained again
    again = run_vlm(cfg)
    assert again["teacher"]["sft"]["reused"] and again["students"]["0.25"]["distill"]["reused"]
    assert again["teacher"]["accuracy"] == teacher["accuracy"]
