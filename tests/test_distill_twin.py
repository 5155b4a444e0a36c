"""Eq. 9's twin pass batched into the student's forward (distill.trainer.twin_pass) gives the losses and
gradients of the two separate passes, on a tiny LLaVA-Phi teacher, its 50 % student and real easy-VQA samples
through LLaVA's data module (left unpadded and padded rows alike)."""
import pytest
import torch

from test_distill_args import build_assets
from test_distill_e2e import _fixed_batch

MAMBA_LAYERS = [0, 2]


@pytest.fixture(scope="module")
def models_and_batch(tmp_path_factory):
    import llava_hybrid
    from llava_hybrid.host.builder import load_pretrained_model
    from llava_hybrid.host.hybrid_models import build_llava_student

    llava_hybrid.activate()
    assets = build_assets(str(tmp_path_factory.mktemp("twin")))
    tok, teacher, processor, _ = load_pretrained_model(assets["teacher"], None, "teacher", device="cpu")
    teacher.eval().requires_grad_(False)
    student = build_llava_student(teacher, MAMBA_LAYERS, init_from_attention=True, seed=0)
    student.config.resid_pdrop = student.config.embd_pdrop = 0.0
    return teacher, student, _fixed_batch(tok, processor, assets["data"], assets["images"])


def _losses_and_grads(student, teacher, batch, batched: bool):
    from llava_hybrid.distill import trainer

    student.zero_grad(set_to_none=True)
    losses = trainer.distill_losses(student, teacher, batch, MAMBA_LAYERS, batch_twin=batched)
    losses.total.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    return losses.as_floats(), grads


def _calls_of_mamba_layer(student, teacher, batch, batched):
    """How many times student layer 0 (Mamba) runs in one distillation step, and its batch sizes."""
    sizes = []
    layer = student.get_model().layers[MAMBA_LAYERS[0]]
    handle = layer.register_forward_hook(lambda module, args, out: sizes.append(out.shape[0]))
    try:
        _losses_and_grads(student, teacher, batch, batched)
    finally:
        handle.remove()
    return sizes


def test_batched_twin_pass_equals_the_separate_passes(models_and_batch):
    from llava_hybrid.distill.trainer import set_trainable

    teacher, student, batch = models_and_batch
    assert not bool(batch["attention_mask"].all())  # padded rows are part of the check
    set_trainable(student, ["mamba", "mm_projector"])
    student.train()
    batched, batched_grads = _losses_and_grads(student, teacher, batch, batched=True)
    separate, separate_grads = _losses_and_grads(student, teacher, batch, batched=False)
    assert batched["loss_layer"] > 0 and batched["loss_prob"] > 0
    assert batched == pytest.approx(separate, rel=1e-5)
    assert set(batched_grads) == set(separate_grads) and any("mamba" in n for n in batched_grads)
    for name, grad in batched_grads.items():
        torch.testing.assert_close(grad, separate_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    b = batch["input_ids"].shape[0]
    assert _calls_of_mamba_layer(student, teacher, batch, batched=True) == [2 * b]  # one call on both inputs
    assert _calls_of_mamba_layer(student, teacher, batch, batched=False) == [b, b]
