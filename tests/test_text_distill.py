"""The text distillation path (distill/text.py): a plain causal-LM teacher, no LLaVA; the layer-only
objective runs only the student's Mamba layers; cached teacher taps equal live ones."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llava_hybrid.distill.losses import layer_distill_loss
from llava_hybrid.distill.text import (TeacherTapCache, TextDistillArguments, TextDistillTrainer, TokenDataset,
                                       heldout_perplexity, text_distill_losses)
from llava_hybrid.distill.trainer import capture_layers
from llava_hybrid.hybrid.init import build_student

LAYERS = [0, 2]


def _teacher():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def _ids(n=6, length=12):
    return torch.randint(0, 64, (n, length), generator=torch.Generator().manual_seed(1))


def test_cached_taps_equal_the_live_teacher_taps():
    teacher, ids = _teacher(), _ids()
    cache = TeacherTapCache(teacher, ids, LAYERS, batch_size=4)
    index = torch.tensor([5, 1])
    with torch.no_grad(), capture_layers(teacher, LAYERS) as live:
        teacher(input_ids=ids[index])
    for i in LAYERS:
        assert torch.allclose(cache.taps(index, [i])[i][0], live[i][0], atol=1e-6)
        assert torch.allclose(cache.taps(index, [i])[i][1], live[i][1], atol=1e-6)


def test_layer_only_step_runs_no_full_student_forward_and_equals_eq9():
    teacher, ids = _teacher(), _ids()
    student = build_student(teacher, LAYERS, seed=0).train()
    calls = []
    student.lm_head.register_forward_hook(lambda *a: calls.append("lm_head"))
    student.model.embed_tokens.register_forward_hook(lambda *a: calls.append("embed"))
    for i in (1, 3):
        student.model.layers[i].register_forward_hook(lambda *a: calls.append("attention layer"))
    batch = {"input_ids": ids[:2], "index": torch.tensor([0, 1])}
    cache = TeacherTapCache(teacher, ids, LAYERS)
    cached = text_distill_losses(student, teacher, batch, LAYERS, beta=0.0, cache=cache)
    live = text_distill_losses(student, teacher, batch, LAYERS, beta=0.0)
    assert calls == []
    with torch.no_grad(), capture_layers(teacher, LAYERS) as taps:
        teacher(input_ids=ids[:2])
    expected = layer_distill_loss([taps[i][1] for i in LAYERS],
                                  [student.model.layers[i](taps[i][0]) for i in LAYERS])
    assert torch.allclose(cached.layer, expected, rtol=1e-5) and torch.allclose(live.layer, expected, rtol=1e-5)
    cached.total.backward()
    assert student.model.layers[0].mamba.in_proj.weight.grad is not None
    # with L_prob the full student forward runs
    both = text_distill_losses(student, teacher, batch, LAYERS, beta=1.0, cache=cache)
    assert "lm_head" in calls and float(both.prob) > 0


def test_text_trainer_lowers_the_layer_loss_with_the_wsd_schedule(tmp_path):
    teacher, ids = _teacher(), _ids(8, 16)
    student = build_student(teacher, LAYERS, seed=0)
    for name, p in student.named_parameters():
        p.requires_grad_(".mamba." in name)
    args = TextDistillArguments(output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=4,
                                learning_rate=1e-2, distill_beta=0.0, logging_steps=1, save_strategy="no",
                                use_cpu=True, seed=0, disable_tqdm=True)
    trainer = TextDistillTrainer(model=student, args=args, train_dataset=TokenDataset(ids), teacher=teacher,
                                 mamba_layers=LAYERS, cache=TeacherTapCache(teacher, ids, LAYERS))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss_layer" in h]
    assert len(logs) == 12 and logs[-1]["loss_layer"] < logs[0]["loss_layer"]
    wsd = trainer.lr_scheduler.lr_lambdas[0]  # the DistillTrainer's WSD schedule: the last step still trains
    assert wsd(11) > 0 and wsd(12) == 0.0
    assert heldout_perplexity(student, ids[:2]) > 1.0
