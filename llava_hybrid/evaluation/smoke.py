"""Smoke copies: every benchmark's input format, tiny, built deterministically from easy-VQA test images
(with their known shape and colour) and real photos that ship in packages (scikit-image's skimage.data,
scikit-learn's sample images). They let each launcher in scripts/eval/ run end to end on a CPU (answers
file + the benchmark's scorer) in CI. They are NOT the benchmarks: every folder holds a SMOKE.md saying
so, and every format field that carries free text (info / description / source) says it too.

    python -m llava_hybrid.evaluation smoke --out playground/data/eval_smoke

Layout under --out is LLaVA's playground/data/eval/<bench> layout with the benchmark's own file names:
MME/MME_Benchmark_release_version/<category>/..., pope/coco/coco_pope_<split>.json, textvqa/
TextVQA_0.5.1_val.json, gqa/data/testdev_balanced_questions.json, vqav2/v2_OpenEnded_mscoco_val2014_*.json,
scienceqa/problems.json + pid_splits.json, mmbench/mmbench_dev_20230712.tsv, mm-vet/mm-vet.json,
MMMU/<Subject>/validation-00000-of-00001.parquet, mmstar/mmstar.parquet (see docs/evaluation.md).
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import random
import shutil
from collections import OrderedDict

from PIL import Image

from .common import write_atomic, write_json, write_jsonl

LABEL = "llava_hybrid smoke copy in {bench}'s format, built from easy-VQA images and package sample photos; NOT {bench}"
SHORT = "\nAnswer the question using a single word or phrase."
SHAPES = ("circle", "rectangle", "triangle")


def easyvqa_images(count: int, offset: int = 0) -> list[tuple[int, Image.Image, str, str]]:
    """(image id, 64x64 RGB image, shape, colour) of easy-VQA test images offset .. offset+count-1."""
    import easy_vqa

    texts, answers, image_ids = easy_vqa.get_test_questions()
    shape, color = {}, {}
    for text, answer, image_id in zip(texts, answers, image_ids):
        if text.startswith("what shape") or (text.startswith("what is the ") and answer in SHAPES):
            shape[image_id] = answer
        elif "color" in text and answer not in ("yes", "no"):
            color[image_id] = answer
    paths = easy_vqa.get_test_image_paths()
    ids = sorted(i for i in shape if i in color)[offset: offset + count]
    return [(i, Image.open(paths[i]).convert("RGB"), shape[i], color[i]) for i in ids]


def photos() -> "OrderedDict[str, tuple[Image.Image, str]]":
    """name -> (photo, what it shows), scaled so the long side is 160 px; camera and coins stay grayscale."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    raw = OrderedDict([("astronaut", (skimage.data.astronaut(), "person")), ("chelsea", (skimage.data.chelsea(), "cat")),
                       ("coffee", (skimage.data.coffee(), "cup")), ("camera", (skimage.data.camera(), "person")),
                       ("coins", (skimage.data.coins(), "coins")), ("china", (load_sample_image("china.jpg"), "building")),
                       ("flower", (load_sample_image("flower.jpg"), "flower"))])
    out = OrderedDict()
    for name, (array, content) in raw.items():
        image = Image.fromarray(array)
        scale = 160 / max(image.size)
        out[name] = (image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC), content)
    return out


def _label(folder: str, bench: str) -> None:
    write_atomic(os.path.join(folder, "SMOKE.md"),
                 f"# Smoke copy, not {bench}\n\n{LABEL.format(bench=bench)}.\nBuilt by `python -m "
                 "llava_hybrid.evaluation smoke`; the real data and where to get it: docs/evaluation.md.\n")


def _save(image: Image.Image, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return path


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _other(value: str, pool, rng: random.Random) -> str:
    return rng.choice([v for v in pool if v != value])


COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")


def build_mme(root: str, rng: random.Random) -> None:
    """Flat categories (existence, color: image + txt side by side) from easy-VQA; scene in the images/ +
    questions_answers_YN layout from photos. Two questions per image, one Yes one No, as MME."""
    base = os.path.join(root, "MME")
    release = os.path.join(base, "MME_Benchmark_release_version")
    rows = []
    items = easyvqa_images(6, offset=0)

    def add(category, image_rel, txt_path, pairs):
        with open(txt_path, "w", encoding="utf-8") as f:
            f.write("".join(f"{q} Please answer yes or no.\t{a}\n" for q, a in pairs))
        for q, _a in pairs:
            rows.append({"question_id": image_rel, "image": image_rel, "text": q + SHORT, "category": category})

    for category, chunk in (("existence", items[:3]), ("color", items[3:])):
        for image_id, image, shape, color in chunk:
            name = f"{image_id:04d}.png"
            _save(image, os.path.join(release, category, name))
            if category == "existence":
                pairs = [(f"Is there a {shape} in this image?", "Yes"),
                         (f"Is there a {_other(shape, SHAPES, rng)} in this image?", "No")]
            else:
                pairs = [(f"Is the shape in the image {color}?", "Yes"),
                         (f"Is the shape in the image {_other(color, COLORS, rng)}?", "No")]
            add(category, f"{category}/{name}", os.path.join(release, category, name[:-4] + ".txt"), pairs)
    scene = os.path.join(release, "scene")
    os.makedirs(os.path.join(scene, "questions_answers_YN"), exist_ok=True)
    contents = [c for _, c in photos().values()]
    for name, (image, content) in list(photos().items())[:3]:
        _save(image.convert("RGB"), os.path.join(scene, "images", f"{name}.jpg"))
        pairs = [(f"Is there a {content} in this image?", "Yes"),
                 (f"Is there a {_other(content, contents, rng)} in this image?", "No")]
        add("scene", f"scene/images/{name}.jpg", os.path.join(scene, "questions_answers_YN", f"{name}.txt"), pairs)
    write_jsonl(os.path.join(base, "llava_mme.jsonl"), rows)
    _label(base, "MME")


def build_pope(root: str, rng: random.Random) -> None:
    """coco_pope_<split>.json label files (JSON lines) + llava_pope_test.jsonl; 2 yes + 2 no per split."""
    base = os.path.join(root, "pope")
    items = easyvqa_images(6, offset=6)
    rows, qid = [], 1
    for s, split in enumerate(("adversarial", "popular", "random")):
        labels = []
        for k, (image_id, image, shape, _color) in enumerate(items[2 * s: 2 * s + 2]):
            name = f"easyvqa_{image_id:05d}.png"
            _save(image, os.path.join(base, "val2014", name))
            for asked, label in ((shape, "yes"), (_other(shape, SHAPES, rng), "no")):
                text = f"Is there a {asked} in the image?"
                labels.append({"question_id": qid, "image": name, "text": text, "label": label})
                rows.append({"question_id": qid, "image": name, "text": text + SHORT, "category": split})
                qid += 1
        write_jsonl(os.path.join(base, "coco", f"coco_pope_{split}.json"), labels)
    write_jsonl(os.path.join(base, "llava_pope_test.jsonl"), rows)
    _label(base, "POPE")


def build_textvqa(root: str, rng: random.Random) -> None:
    """TextVQA_0.5.1_val.json (10 answers per question) + LLaVA's llava_textvqa_val_v051_ocr.jsonl
    (question_id = image_id, as LLaVA's file; no OCR tokens, the two-line prompt form)."""
    base = os.path.join(root, "textvqa")
    data, rows = [], []
    for k, (image_id, image, shape, color) in enumerate(easyvqa_images(4, offset=12)):
        hex_id = f"{0x5e0000 + image_id:016x}"
        _save(image.convert("RGB"), os.path.join(base, "train_images", f"{hex_id}.jpg"))
        question, answer = (("what color is the shape?", color) if k % 2 == 0 else ("what shape is in the image?", shape))
        data.append({"question": question, "image_id": hex_id, "image_classes": ["Shape"],
                     "flickr_original_url": "", "flickr_300k_url": "", "image_width": image.width,
                     "image_height": image.height, "answers": [answer] * 9 + [_other(answer, COLORS + SHAPES, rng)],
                     "question_tokens": question.rstrip("?").split(), "question_id": 50000 + k, "set_name": "val"})
        rows.append({"question_id": hex_id, "image": f"{hex_id}.jpg", "text": question.capitalize() + SHORT,
                     "category": "default"})
    write_json(os.path.join(base, "TextVQA_0.5.1_val.json"),
               {"dataset_type": "val", "dataset_name": LABEL.format(bench="TextVQA"), "dataset_version": "0.5.1",
                "data": data})
    write_jsonl(os.path.join(base, "llava_textvqa_val_v051_ocr.jsonl"), rows)
    _label(base, "TextVQA")


def build_gqa(root: str, rng: random.Random) -> None:
    """testdev_balanced_questions.json (verify + query pairs per image, entailing each other) + images +
    LLaVA's llava_gqa_testdev_balanced.jsonl."""
    base = os.path.join(root, "gqa")
    questions, rows = {}, []
    for image_id, image, shape, color in easyvqa_images(3, offset=16):
        name = f"n{image_id:06d}"
        _save(image.convert("RGB"), os.path.join(base, "data", "images", f"{name}.jpg"))
        pair = [(f"{image_id}0", f"Is there a {shape} in the image?", "yes", "verify", "obj"),
                (f"{image_id}1", "What color is the shape?", color, "query", "attr")]
        for qid, text, answer, structural, semantic in pair:
            questions[qid] = {"question": text, "imageId": name, "answer": answer, "fullAnswer": f"{answer}.",
                              "isBalanced": True, "groups": {"global": None, "local": None},
                              "entailed": [other for other, *_ in pair if other != qid], "equivalent": [qid],
                              "types": {"structural": structural, "semantic": semantic, "detailed": f"{semantic}Smoke"},
                              "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
                              "semantic": [{"operation": "select", "dependencies": [], "argument": "shape"}],
                              "semanticStr": LABEL.format(bench="GQA")}
            rows.append({"question_id": qid, "image": f"{name}.jpg", "text": text + SHORT, "category": "default"})
    write_json(os.path.join(base, "data", "testdev_balanced_questions.json"), questions)
    write_jsonl(os.path.join(base, "llava_gqa_testdev_balanced.jsonl"), rows)
    _label(base, "GQA")


def build_vqav2(root: str, rng: random.Random) -> None:
    """The val layout (official questions + annotations JSON, images) so a local VQA accuracy exists."""
    base = os.path.join(root, "vqav2")
    info = {"description": LABEL.format(bench="VQAv2"), "version": "2.0", "year": 2026}
    questions, annotations = [], []
    for k, (image_id, image, shape, color) in enumerate(easyvqa_images(3, offset=22)):
        coco_id = 900000 + image_id
        _save(image.convert("RGB"), os.path.join(base, "val2014", f"COCO_val2014_{coco_id:012d}.jpg"))
        for j, (text, answer, kind) in enumerate(((f"Is the shape {color}?", "yes", "yes/no"),
                                                  ("What shape is this?", shape, "other"))):
            qid = coco_id * 1000 + j
            questions.append({"image_id": coco_id, "question": text, "question_id": qid})
            answers = [answer] * 8 + [_other(answer, SHAPES + ("yes", "no"), rng)] * 2
            annotations.append({"question_type": text.split()[0].lower(), "multiple_choice_answer": answer,
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                            for i, a in enumerate(answers)],
                                "image_id": coco_id, "answer_type": kind, "question_id": qid})
    common = {"info": info, "license": {"name": "MIT (easy-VQA)", "url": ""}, "data_subtype": "val2014"}
    write_json(os.path.join(base, "v2_OpenEnded_mscoco_val2014_questions.json"),
               {**common, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions})
    write_json(os.path.join(base, "v2_mscoco_val2014_annotations.json"),
               {**common, "data_type": "mscoco", "annotations": annotations})
    _label(base, "VQAv2")


def build_scienceqa(root: str, rng: random.Random) -> None:
    """problems.json + pid_splits.json + images/test/<pid>/image.png + LLaVA's llava_test_CQM-A.json: easy-VQA
    questions, a grayscale photo (the grayscale_pad patch's case) and one text-only question."""
    base = os.path.join(root, "scienceqa")
    problems, conversations = {}, []
    cases = [(f"{image_id}", image, "What shape is in the image?", list(SHAPES), SHAPES.index(shape))
             for image_id, image, shape, _c in easyvqa_images(2, offset=28)]
    coins, _ = photos()["coins"]
    cases.append(("70001", coins, "What is shown in the photo?", ["coins", "cats"], 0))
    cases.append(("70002", None, "Which word names a color?", ["circle", "red"], 1))
    for pid, image, question, choices, answer in cases:
        if image is not None:
            _save(image, os.path.join(base, "images", "test", pid, "image.png"))
        problems[pid] = {"question": question, "choices": choices, "answer": answer,
                         "hint": "" if image is not None else "A color is a property of how things look.",
                         "image": "image.png" if image is not None else None, "task": "closed choice",
                         "grade": "grade1", "subject": "natural science", "topic": "smoke", "category": "smoke",
                         "skill": LABEL.format(bench="ScienceQA"), "lecture": "", "solution": "", "split": "test"}
        context = problems[pid]["hint"] or "N/A"
        options = "\n".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(choices))
        value = f"Context: {context}\n{question}\n{options}"
        entry = {"id": pid, "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + value},
                                              {"from": "gpt", "value": f"The answer is {'ABCDE'[answer]}."}]}
        if image is not None:
            entry["image"] = f"{pid}/image.png"
        conversations.append(entry)
    write_json(os.path.join(base, "problems.json"), problems)
    write_json(os.path.join(base, "pid_splits.json"), {"train": [], "val": [], "test": list(problems),
                                                       "minival": [], "minitest": list(problems)})
    write_json(os.path.join(base, "llava_test_CQM-A.json"), conversations)
    _label(base, "ScienceQA")


def build_mmbench(root: str, rng: random.Random) -> None:
    """mmbench_dev_20230712.tsv with base64 images (a 3-option question leaves D empty, as MMBench does)."""
    import pandas as pd

    base = os.path.join(root, "mmbench")
    rows = []
    for k, (image_id, image, shape, color) in enumerate(easyvqa_images(3, offset=32)):
        if k < 2:
            options = list(COLORS[:4]) if color in COLORS[:4] else [color] + list(COLORS[:3])
            question, answer, cat, l2 = "What color is the shape?", "ABCD"[options.index(color)], \
                "attribute_recognition", "finegrained_perception (instance-level)"
        else:
            options = list(SHAPES) + [None]
            question, answer, cat, l2 = "Which shape is in the image?", "ABC"[SHAPES.index(shape)], \
                "object_localization", "finegrained_perception (instance-level)"
        rows.append({"index": k, "question": question, "hint": None if k else "The image shows one shape.",
                     "A": options[0], "B": options[1], "C": options[2], "D": options[3], "answer": answer,
                     "category": cat, "image": _b64(image), "source": LABEL.format(bench="MMBench"),
                     "l2-category": l2, "comment": None, "split": "dev"})
    astronaut, _ = photos()["astronaut"]
    rows.append({"index": 3, "question": "What is in the image?", "hint": None, "A": "a cat", "B": "a person",
                 "C": "a rocket", "D": "a flower", "answer": "B", "category": "image_topic",
                 "image": _b64(astronaut.convert("RGB")), "source": LABEL.format(bench="MMBench"),
                 "l2-category": "coarse_perception", "comment": None, "split": "dev"})
    os.makedirs(base, exist_ok=True)
    pd.DataFrame(rows).to_csv(os.path.join(base, "mmbench_dev_20230712.tsv"), sep="\t", index=False)
    _label(base, "MMBench")


def build_mmvet(root: str, rng: random.Random) -> None:
    """mm-vet.json + images/ + LLaVA's llava-mm-vet.jsonl."""
    base = os.path.join(root, "mm-vet")
    release, rows = {}, []
    for k, (image_id, image, shape, color) in enumerate(easyvqa_images(3, offset=36)):
        name = f"v1_{k}.png"
        _save(image, os.path.join(base, "images", name))
        question = "What shape is in the image?" if k % 2 else "What color is the shape?"
        release[f"v1_{k}"] = {"imagename": name, "capability": ["rec"], "question": question,
                              "answer": shape if k % 2 else color}
        rows.append({"question_id": k, "image": name, "text": question})
    write_json(os.path.join(base, "mm-vet.json"), release)
    write_jsonl(os.path.join(base, "llava-mm-vet.jsonl"), rows)
    _label(base, "MM-Vet")


def _hf_image(image: Image.Image, name: str) -> dict:
    return {"bytes": _png_bytes(image), "path": name}


def build_mmmu(root: str, rng: random.Random) -> None:
    """MMMU/<Subject>/validation-00000-of-00001.parquet in the release's columns: multiple choice on
    easy-VQA images and photos, one open (numeric) question."""
    import pandas as pd

    base = os.path.join(root, "MMMU")
    items = easyvqa_images(3, offset=40)
    subjects = {
        "Art": [("What is the main object in <image 1>?", ["a cat", "a person", "a cup"], "B", "astronaut"),
                ("What does <image 1> show?", ["coins", "a building", "a flower"], "C", "flower")],
        "Math": [(f"Which shape is drawn in <image 1>?", list(SHAPES), "ABC"[SHAPES.index(items[0][2])], 0),
                 ("How many shapes are in <image 1>?", None, "1", 1)],
    }
    pictures = photos()
    for subject, questions in subjects.items():
        records = []
        for i, (question, options, answer, picture) in enumerate(questions, 1):
            image = pictures[picture][0] if isinstance(picture, str) else items[picture][1]
            record = {"id": f"validation_{subject}_{i}", "question": question, "options": str(options or []),
                      "explanation": "", "image_1": _hf_image(image.convert("RGB"), f"{subject}_{i}.png"),
                      "img_type": str(["Photographs"]), "answer": answer, "topic_difficulty": "Easy",
                      "question_type": "multiple-choice" if options else "open",
                      "subfield": LABEL.format(bench="MMMU")}
            for j in range(2, 8):
                record[f"image_{j}"] = None
            records.append(record)
        folder = os.path.join(base, subject)
        os.makedirs(folder, exist_ok=True)
        pd.DataFrame(records).to_parquet(os.path.join(folder, "validation-00000-of-00001.parquet"), index=False)
    _label(base, "MMMU")


def build_mmstar(root: str, rng: random.Random) -> None:
    """mmstar/mmstar.parquet in the release's columns (options inside the question text)."""
    import pandas as pd

    base = os.path.join(root, "mmstar")
    records = []
    for k, (image_id, image, shape, color) in enumerate(easyvqa_images(4, offset=44)):
        if k % 2:
            options, truth, category, l2 = list(SHAPES) + ["star"], shape, "coarse perception", "image scene and topic"
            question = "Which shape is in the image?"
        else:
            options = [color] + [c for c in COLORS if c != color][:3]
            rng.shuffle(options)
            truth, category, l2 = color, "fine-grained perception", "attribute recognition"
            question = "What color is the shape?"
        listed = ", ".join(f"{'ABCD'[i]}: {o}" for i, o in enumerate(options))
        records.append({"index": k, "question": f"{question}\nOptions: {listed}", "image": _hf_image(image, f"{k}.png"),
                        "answer": "ABCD"[options.index(truth)], "category": category, "l2_category": l2,
                        "meta_info": {"source": LABEL.format(bench="MMStar"), "split": "val", "image_path": f"{k}.png"}})
    os.makedirs(base, exist_ok=True)
    pd.DataFrame(records).to_parquet(os.path.join(base, "mmstar.parquet"), index=False)
    _label(base, "MMStar")


BUILDERS = OrderedDict([("mme", build_mme), ("pope", build_pope), ("textvqa", build_textvqa), ("gqa", build_gqa),
                        ("vqav2", build_vqav2), ("sqa", build_scienceqa), ("mmbench", build_mmbench),
                        ("mmvet", build_mmvet), ("mmmu", build_mmmu), ("mmstar", build_mmstar)])


def build(out: str, benchmarks=None) -> str:
    """Write the smoke copies of `benchmarks` (default all) under out (replacing earlier copies)."""
    for name in benchmarks or BUILDERS:
        if name not in BUILDERS:
            raise ValueError(f"--benchmarks: unknown {name!r}; choose from {', '.join(BUILDERS)}")
        BUILDERS[name](out, random.Random(f"smoke-{name}"))
    return out


def main(argv=None) -> str:
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.evaluation smoke", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="playground/data/eval_smoke")
    p.add_argument("--benchmarks", default=None, help="comma-separated subset (default: all ten)")
    a = p.parse_args(argv)
    if os.path.isdir(a.out) and not a.benchmarks:
        shutil.rmtree(a.out)
    out = build(a.out, a.benchmarks.split(",") if a.benchmarks else None)
    print(f"[smoke] copies of {', '.join(a.benchmarks.split(',') if a.benchmarks else BUILDERS)} -> {out}")
    return out
