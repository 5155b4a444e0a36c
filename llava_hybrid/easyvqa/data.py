"""easy-VQA (PyPI `easy_vqa`) -> LLaVA-format training JSON, eval question files and image folders.

Layout written under `out_dir` (LLaVA's convention, `--image_folder out_dir/images`):

    images/train/{id}.png            the package's 64x64 PNGs (copied)
    images/train/{id}_{aug}.png      label-preserving flips / rotations (only with `augment > 0`)
    images/test/{id}.png
    train.json                       [{"id", "image": "train/{id}.png", "conversations": [...]}]
    test.jsonl                       {"question_id", "image", "text", "answer", "type"} per test question
    test_{n}.jsonl                   a fixed subset of n test questions (only with `test_subset`)

With `balance`, yes/no questions whose answer is the rarer one for their template ("is there a
<colour> shape?" is answered "no" 88 % of the time) are repeated in extra conversations until both
answers are about equally frequent per template: the question text alone then predicts half of
them, so the model must compare the question with the image (VQA v2's reason for balancing).

Every question about one image is grouped into one multi-turn conversation (or chunks of `turns`),
so the vision tower runs once per image instead of once per question. Everything is deterministic:
questions keep the package's order, shuffles use `numpy.random.RandomState(seed)`.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

QUESTION_TYPES = ("yes/no", "shape", "color")
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
# Label-preserving augmentations: easy-VQA questions ask about shape, colour and presence only,
# never about position or orientation, so flips and quarter turns keep every answer true.
AUGMENTATIONS = ("flip", "rot90", "rot180", "rot270", "flip_rot90")
SUBSET_SEED = 0


@dataclass(frozen=True)
class Question:
    """One easy-VQA question about one image."""
    text: str
    answer: str
    image_id: int
    qtype: str


def question_type(question: str, answer: str) -> str:
    """The question type, derived from the answer: 'yes/no', 'shape' or 'color'."""
    if answer in ("yes", "no"):
        return "yes/no"
    if answer in SHAPES:
        return "shape"
    return "color"


def load_split(split: str) -> tuple[list[Question], dict[int, str]]:
    """Questions (package order) and {image_id: png path} of the easy_vqa `split` ('train'|'test')."""
    import easy_vqa

    if split == "train":
        texts, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        texts, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    questions = [Question(t, a, int(i), question_type(t, a)) for t, a, i in zip(texts, answers, image_ids)]
    return questions, {int(k): v for k, v in paths.items()}


def template(text: str) -> str:
    """The question with its colour and shape words masked: 'is there a red shape?' -> 'is there a C shape?'."""
    return " ".join("C" if w in COLORS else "S" if w in SHAPES else w for w in text.rstrip("?").split()) + "?"


def balance_repeats(questions: list[Question]) -> dict[Question, int]:
    """{yes/no question: extra copies} that make yes and no about equally frequent per template."""
    counts: dict[str, dict[str, int]] = {}
    for q in questions:
        if q.qtype == "yes/no":
            counts.setdefault(template(q.text), {"yes": 0, "no": 0})[q.answer] += 1
    repeats = {}
    for q in questions:
        if q.qtype != "yes/no":
            continue
        c = counts[template(q.text)]
        mine, other = c[q.answer], c["no" if q.answer == "yes" else "yes"]
        if mine and other > mine:
            repeats[q] = round(other / mine) - 1
    return {q: n for q, n in repeats.items() if n > 0}


def group_by_image(questions: list[Question]) -> dict[int, list[Question]]:
    """{image_id: questions in package order}, image ids ascending."""
    groups: dict[int, list[Question]] = {}
    for q in questions:
        groups.setdefault(q.image_id, []).append(q)
    return {k: groups[k] for k in sorted(groups)}


def conversation(questions: list[Question]) -> list[dict]:
    """LLaVA conversation turns; the image token opens the first human turn only."""
    turns = []
    for k, q in enumerate(questions):
        value = ("<image>\n" + q.text) if k == 0 else q.text
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": q.answer}]
    return turns


def _augmented(image, name: str):
    from PIL import Image

    ops = {
        "flip": [Image.Transpose.FLIP_LEFT_RIGHT],
        "rot90": [Image.Transpose.ROTATE_90],
        "rot180": [Image.Transpose.ROTATE_180],
        "rot270": [Image.Transpose.ROTATE_270],
        "flip_rot90": [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90],
    }[name]
    for op in ops:
        image = image.transpose(op)
    return image


def build_train_records(questions: list[Question], turns: int = 0, augment: int = 0,
                        seed: int = 0, max_images: int | None = None, balance: bool = False) -> list[dict]:
    """LLaVA training records: one per (image, augmentation, chunk of `turns` questions).

    turns: questions per conversation (0 = all questions of the image in one conversation).
    augment: number of extra augmented copies per image (0..len(AUGMENTATIONS)).
    The question order inside each image is shuffled with `seed` so no question is always first;
    the record order is shuffled with `seed` too (LLaVA's sampler shuffles again per epoch).
    balance: add the `balance_repeats` copies, copy k of an image's questions in its own conversations
    (never beside the original, whose answer it would give away).
    """
    if turns < 0:
        raise ValueError(f"--turns must be >= 0, got {turns}")
    if not 0 <= augment <= len(AUGMENTATIONS):
        raise ValueError(f"--augment must be in 0..{len(AUGMENTATIONS)}, got {augment}")
    rng = np.random.RandomState(seed)
    groups = group_by_image(questions)
    image_ids = list(groups)[:max_images] if max_images else list(groups)
    repeats = balance_repeats(questions) if balance else {}
    records = []
    for image_id in image_ids:
        extra = max((repeats.get(q, 0) for q in groups[image_id]), default=0)
        for view in ("",) + AUGMENTATIONS[:augment]:
            suffix = f"_{view}" if view else ""
            for copy in range(1 + extra):  # copy 0: every question; copy k: the rare answers repeated
                pool = groups[image_id] if copy == 0 else [q for q in groups[image_id] if repeats.get(q, 0) >= copy]
                qs = [pool[j] for j in rng.permutation(len(pool))]
                size = turns or len(qs)
                for c in range(0, len(qs), size):
                    records.append({
                        "id": f"easyvqa-{image_id}{suffix}-{c // size}" + (f"-r{copy}" if copy else ""),
                        "image": f"train/{image_id}{suffix}.png",
                        "conversations": conversation(qs[c:c + size]),
                    })
    order = rng.permutation(len(records))
    return [records[j] for j in order]


def build_eval_records(questions: list[Question], split: str = "test") -> list[dict]:
    """LLaVA eval question-file lines (+ answer and type for the scorer); question_id = index."""
    return [{"question_id": k, "image": f"{split}/{q.image_id}.png", "text": q.text,
             "answer": q.answer, "type": q.qtype} for k, q in enumerate(questions)]


def fixed_subset(records: list[dict], n: int, seed: int = SUBSET_SEED) -> list[dict]:
    """A fixed subset of n eval records: the first n of a RandomState(seed) permutation, in id order."""
    if not 0 < n <= len(records):
        raise ValueError(f"--test-subset must be in 1..{len(records)}, got {n}")
    keep = sorted(np.random.RandomState(seed).permutation(len(records))[:n].tolist())
    return [records[j] for j in keep]


def _write_images(paths: dict[int, str], image_ids, out_dir: str, augment: int) -> None:
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    for image_id in image_ids:
        dst = os.path.join(out_dir, f"{image_id}.png")
        if not os.path.exists(dst):
            shutil.copyfile(paths[image_id], dst)
        for view in AUGMENTATIONS[:augment]:
            dst_aug = os.path.join(out_dir, f"{image_id}_{view}.png")
            if not os.path.exists(dst_aug):
                with Image.open(paths[image_id]) as im:
                    _augmented(im.convert("RGB"), view).save(dst_aug)


def _write_json(obj, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def _write_jsonl(rows: list[dict], path: str) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def prepare(out_dir: str, turns: int = 0, augment: int = 0, test_subset: int | None = None,
            max_train_images: int | None = None, max_test_images: int | None = None,
            seed: int = 0, balance: bool = False) -> dict[str, str]:
    """Write the easy-VQA data in LLaVA's layout under `out_dir`; returns the written paths.

    max_train_images / max_test_images shrink the data (tests, smoke runs); None = everything.
    """
    train_q, train_paths = load_split("train")
    test_q, test_paths = load_split("test")
    train_records = build_train_records(train_q, turns, augment, seed, max_train_images, balance)
    if max_test_images:
        keep = set(list(group_by_image(test_q))[:max_test_images])
        test_q = [q for q in test_q if q.image_id in keep]
    test_records = build_eval_records(test_q, "test")

    train_ids = sorted({int(r["image"].split("/")[1].split(".")[0].split("_")[0]) for r in train_records})
    _write_images(train_paths, train_ids, os.path.join(out_dir, "images", "train"), augment)
    _write_images(test_paths, sorted({q.image_id for q in test_q}), os.path.join(out_dir, "images", "test"), 0)
    out = {"image_folder": os.path.join(out_dir, "images"),
           "train": os.path.join(out_dir, "train.json"),
           "test": os.path.join(out_dir, "test.jsonl")}
    _write_json(train_records, out["train"])
    _write_jsonl(test_records, out["test"])
    if test_subset:
        out["test_subset"] = os.path.join(out_dir, f"test_{test_subset}.jsonl")
        _write_jsonl(fixed_subset(test_records, test_subset), out["test_subset"])
    return out
