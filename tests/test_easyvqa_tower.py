"""Stage 0 of the teacher recipe: the SigLIP tower pretrained on labels read from the train split."""
import json

import torch

from llava_hybrid.easyvqa import tower
from llava_hybrid.easyvqa.data import SHAPES, load_split
from llava_hybrid.host.tiny import _save_tower, _tower_config


def test_labels_come_from_the_split_answers():
    pixels, shape, color = tower.image_labels("test")
    questions, paths = load_split("test")
    assert pixels.shape == (len(paths), 3, 64, 64) and -1.0 <= float(pixels.min()) < float(pixels.max()) <= 1.0
    ids = sorted(paths)
    q = next(q for q in questions if q.qtype == "shape")
    assert SHAPES[int(shape[ids.index(q.image_id)])] == q.answer
    q = next(q for q in questions if q.qtype == "color")
    assert tower.COLORS[int(color[ids.index(q.image_id)])] == q.answer
    # every labelled image is labelled with a known class; the rest are ignored, not guessed
    assert set(shape.unique().tolist()) <= {tower.IGNORE, 0, 1, 2}
    assert (shape != tower.IGNORE).sum() == len({q.image_id for q in questions if q.qtype == "shape"})


def test_pretrain_learns_colour_and_saves_the_tower_in_place(tmp_path):
    from transformers import SiglipVisionModel

    torch.manual_seed(0)
    tower_dir = str(tmp_path / "vision_tower")
    _save_tower(SiglipVisionModel(_tower_config(32, 1, 64, 16)).eval(), tower_dir)
    before = SiglipVisionModel.from_pretrained(tower_dir).state_dict()
    card = tower.pretrain_tower(tower_dir, tower.TowerPretrainConfig(steps=80, batch_size=32, warmup_steps=5))
    after = SiglipVisionModel.from_pretrained(tower_dir).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the saved tower did not change"
    # colour is nearly one linear read-out of the pixels: 80 steps lift every token far above chance (1/8)
    assert card["test_probe_accuracy"]["color"] > 0.5 and 0 <= card["test_probe_accuracy"]["color_all_tokens"] <= 1
    assert json.loads((tmp_path / "vision_tower" / "pretrain.json").read_text())["config"]["steps"] == 80
