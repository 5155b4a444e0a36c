"""llava_hybrid.compat: the two-lane helpers, on whichever lane runs the suite (CI runs both)."""
import os

import torch

from llava_hybrid import compat


def test_rotate_checkpoints_keeps_the_newest_save_total_limit(tmp_path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), save_total_limit=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=torch.nn.Linear(2, 2), args=args)
    for step in (10, 20, 30):
        os.makedirs(tmp_path / f"checkpoint-{step}")
    compat.rotate_checkpoints(trainer, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-20", "checkpoint-30"]


def test_versions_and_lane_helpers_agree_with_the_installed_transformers():
    import transformers

    v = compat.transformers_version()
    assert v == compat.parse_version(transformers.__version__) and compat.parse_version("5.0.0rc1") == (5, 0, 0)
    five = v >= (5, 0, 0)
    assert compat.configs_are_dataclasses() is five
    assert isinstance(compat.tied_weights_keys(), dict if five else list)
    lifted = compat.lift_rope_parameters({"rope_parameters": {"partial_rotary_factor": 0.4}, "rope_theta": 7.0})
    assert ("partial_rotary_factor" in lifted) is (not five) and lifted["rope_theta"] == 7.0
