"""Decode benchmark: the bandwidth bound against hand-computed Phi-2 numbers, the analytic parameter
count against real models, a tiny end-to-end run (rows + plots), and the fairness check that the project's
decode loop and stock transformers generate produce the same tokens from the same weights."""

import json
import os

import pytest
import torch

from llava_hybrid.bench.bound import (
    bound_speed_ratio,
    decode_bytes,
    kv_bytes_per_token,
    mamba_state_bytes,
    param_count,
    run_bound_speed_ratio,
)
from llava_hybrid.bench.decode import DecodeBenchSpec, run_decode_benchmark
from llava_hybrid.bench.models import SHAPES, build_model, shape_config, to_transformers_phi
from llava_hybrid.bench.run import replot, run_all
from llava_hybrid.hybrid import HybridLlamaConfig, HybridLlamaForCausalLM, HybridPhiConfig, HybridPhiForCausalLM
from llava_hybrid.hybrid import generate_tokens, plan_mamba_layers

GiB = 2**30


@pytest.fixture
def one_thread():
    """One torch thread (as the CPU benchmark runs; a shared 2-core machine is slower with two), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def phi2(ratio):
    layers = plan_mamba_layers(32, ratio) if ratio else []
    return HybridPhiConfig(**SHAPES["phi2"], mamba_layers=layers)


def test_bound_matches_hand_computed_phi2_numbers():
    teacher = phi2(0)
    # K and V, 32 kv heads x 80 channels, 2 bytes: 2 * 32 * 80 * 2 = 10,240 B per layer per token
    assert kv_bytes_per_token(teacher, "fp16") == 10_240
    # Phi-2 has 2.78 B parameters: 51200*2560 embed + 32 * (4*2560^2 + 2*2560*10240 + biases/LN) + lm_head
    assert param_count(teacher) == 2_779_683_840
    # one Mamba layer's state: conv 7680 x 4 fp16 (60 KiB) + ssm 32 x 80 x 80 fp32 (800 KiB)
    assert mamba_state_bytes(phi2(0.25), "fp16") == 7680 * 4 * 2 + 32 * 80 * 80 * 4
    # at 16K: teacher KV 32 layers * 10,240 B * 16,384 = 5.0 GiB; streamed weights (all but the embedding
    # table) 2.65 B params * 2 B = 4.93 GiB
    teacher_bytes = decode_bytes(teacher, 16_384, dtype="fp16")
    assert teacher_bytes["kv"] == 5 * GiB
    assert teacher_bytes["weights"] / GiB == pytest.approx(4.93, abs=0.01)
    # bounds (upstream facts section 5): ~1.06x / 1.13x / 1.30x, all-Mamba 1.85x
    for ratio, expected in ((0.125, 1.06), (0.25, 1.13), (0.5, 1.30), (1.0, 1.85)):
        assert bound_speed_ratio(phi2(ratio), teacher, 16_384, dtype="fp16") == pytest.approx(expected, abs=0.005)
    # large batch: the KV dominates and the bound tends to 1 / (1 - ratio), less the Mamba states' share
    # (860 KiB per layer and row = 86 tokens of KV): 2 / (1 + 880,640 / (10,240 * 16,384)) = 1.9895
    assert bound_speed_ratio(phi2(0.5), teacher, 16_384, batch=4096) == pytest.approx(1.9895, abs=0.001)
    # a run's bound (linear bytes) is the bound at the mean context length
    assert run_bound_speed_ratio(phi2(0.25), teacher, 16, 2049) == pytest.approx(
        bound_speed_ratio(phi2(0.25), teacher, 16 + 1024))


@pytest.mark.parametrize("family", ["phi", "llama_gqa_tied"])
def test_param_count_equals_the_real_model(family):
    tiny = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)
    if family == "phi":
        config = HybridPhiConfig(**tiny, partial_rotary_factor=0.5, mamba_layers=[1, 3])
        model = HybridPhiForCausalLM(config)
    else:
        config = HybridLlamaConfig(**tiny, num_key_value_heads=2, tie_word_embeddings=True, mamba_layers=[0],
                                   mamba_d_state=8, mamba_carry_bias=True)
        model = HybridLlamaForCausalLM(config)
    assert param_count(config) == sum(p.numel() for p in model.parameters())
    cache = model.allocate_cache(1, 10)
    assert cache.nbytes()["ssm"] + cache.nbytes()["conv"] == len(config.mamba_layers) * mamba_state_bytes(config, "fp32")
    assert cache.nbytes()["kv"] == len(config.attention_layers) * kv_bytes_per_token(config, "fp32") * 10


def test_bound_rejects_other_configs():
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="PhiConfig"):
        param_count(GPT2Config())


def test_same_engine_teacher_tokens_equal_transformers_greedy_generate(one_thread):
    config = shape_config("tiny", 0.0)
    config.initializer_range = 0.3  # spread the logits so greedy tokens vary (0.02 repeats one pair)
    model = build_model(config, "cpu", torch.float32, seed=1)
    reference = to_transformers_phi(model)
    ids = torch.randint(0, config.vocab_size, (2, 7))
    ours = generate_tokens(model, ids, max_new_tokens=48).sequences  # (2, 48)
    theirs = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[:, 7:]
    assert len(set(ours[0].tolist())) > 4  # a real sequence, not one repeated token
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("protocol,rounds", [("prefix", 2), ("per_length", 1), ("context", 2)])
def test_tiny_run_rows_schema_and_plots(tmp_path, protocol, rounds, one_thread):
    spec = DecodeBenchSpec(shape="tiny", ratios=(0.5,), gen_lens=(8, 24), batches=(1, 2), prompt_len=4,
                           protocol=protocol, rounds=rounds, context_steps=5, timer="cpu" if rounds > 1 else "wall")
    paths = run_all(spec, tmp_path, layer_lens=(16, 64) if protocol == "prefix" else (), layer_shape="tiny",
                    layer_repeats=2, log=lambda line: None)
    data = json.loads((tmp_path / "decode_cpu.json").read_text())
    assert {"device", "date", "torch", "command", "spec"} <= set(data["header"])
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 2 + 2 * 2  # (teacher same + hf_generate) and hybrid same, x 2 batches x 2 lengths
    keys = {"model", "ratio", "engine", "batch", "gen_len", "tokens_per_s", "peak_mem_bytes", "bound_speed_ratio",
            "oom", "cache_bytes", "speed_ratio_vs_teacher", "speed_ratio_vs_hf_generate"}
    for r in rows:
        assert keys <= set(r), keys - set(r)
        assert r["oom"] is False and r["tokens_per_s"] > 0 and r["peak_mem_bytes"] > r["cache_bytes"] > 0
        if rounds > 1:  # the fastest round is kept
            assert len(r["tokens_per_s_rounds"]) == rounds and r["tokens_per_s"] == max(r["tokens_per_s_rounds"])
    assert {(r["model"], r["engine"]) for r in rows} == {
        ("teacher", "same"), ("teacher", "hf_generate"), ("hybrid-50%", "same")}
    teacher = [r for r in rows if r["model"] == "teacher" and r["engine"] == "same"]
    assert all(r["bound_speed_ratio"] == 1.0 and r["speed_ratio_vs_teacher"] == 1.0 for r in teacher)
    # memory accounting: the teacher's KV grows with the length, the hybrid's grows half as fast
    cache = {(r["model"], r["engine"], r["batch"], r["gen_len"]): r["cache_bytes"] for r in rows}
    kv_step = kv_bytes_per_token(shape_config("tiny", 0.0), "fp32")
    assert cache["teacher", "same", 1, 24] - cache["teacher", "same", 1, 8] == 16 * 4 * kv_step
    assert cache["hybrid-50%", "same", 1, 24] - cache["hybrid-50%", "same", 1, 8] == 16 * 2 * kv_step
    ends = {r["context_len_end"] for r in rows if r["gen_len"] == 24}  # prompt + 24 - 1, or 24 + 3 skipped + 5 timed
    assert ends == ({24 + 3 + 5} if protocol == "context" else {4 + 24 - 1})
    for path in paths:
        assert path.exists() and path.stat().st_size > 0
    names = {p.name for p in paths}
    assert {"decode_cpu_speed.png", "decode_cpu_memory.png", "decode_cpu_ratio.png"} <= names
    redrawn = replot(tmp_path / "decode_cpu.json")  # --plot-only: from the JSON alone
    assert [p.name for p in redrawn] == ["decode_cpu_speed.png", "decode_cpu_memory.png", "decode_cpu_ratio.png"]
    if protocol == "prefix":
        layer = json.loads((tmp_path / "layer_step_cpu.json").read_text())["rows"]
        assert {(r["layer"], r["context_len"]) for r in layer} == {(k, n) for k in ("attention", "mamba") for n in (16, 64)}
        assert "layer_step_cpu.png" in names


def test_bad_spec_values_name_the_flag():
    with pytest.raises(ValueError, match="--protocol"):
        run_decode_benchmark(DecodeBenchSpec(shape="tiny", protocol="nope"))
    with pytest.raises(ValueError, match="--shape"):
        run_decode_benchmark(DecodeBenchSpec(shape="huge"))
    with pytest.raises(ValueError, match="--timer"):
        run_decode_benchmark(DecodeBenchSpec(shape="tiny", device="meta", timer="cpu"))
    with pytest.raises(ValueError, match="--rounds"):
        run_decode_benchmark(DecodeBenchSpec(shape="tiny", rounds=0))
    with pytest.raises(ValueError, match="--engines"):
        run_decode_benchmark(DecodeBenchSpec(shape="tiny", engines=("vllm",)))


def test_distill_step_benchmark_measures_both_steps(tmp_path):
    """The distillation-vs-SFT step benchmark runs the real steps on a real easy-VQA batch."""
    from llava_hybrid.bench.distill_step import DistillStepSpec, run_distill_step_benchmark, write_result
    from llava_hybrid.easyvqa.data import prepare

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = str(tmp_path / "data")
    prepare(data_dir, turns=1, max_train_images=4, max_test_images=1)
    spec = DistillStepSpec(teacher=os.path.join(repo, "playground", "easyvqa", "teacher"), data_dir=data_dir,
                           ratio=0.25, batch_size=2, rounds=3, warmup=1, timer="cpu", threads=1)
    result = run_distill_step_benchmark(spec)
    write_result(result, str(tmp_path / "distill.json"))
    assert result["mamba_layers"] and all(len(v) == 3 for v in result["rounds_s"].values())
    # the distillation step does strictly more work than the SFT step (a teacher forward on top)
    assert result["distill_step_s"] > result["sft_step_s"] > 0
    assert 0 < result["teacher_share_of_distill_step"] < 1
    assert json.load(open(tmp_path / "distill.json"))["ratio_distill_over_sft"] == result["ratio_distill_over_sft"]
