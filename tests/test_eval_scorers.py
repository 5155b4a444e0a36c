"""The benchmark converters and scorers of llava_hybrid.evaluation on hand-made inputs whose right answer
is known, and the smoke copies: deterministic, in each benchmark's own file format, labelled as smoke."""
import json
import os

import pytest

from llava_hybrid.evaluation import gqa, mmbench, mme, mmmu, mmstar, smoke, table, vqav2
from llava_hybrid.evaluation.common import read_jsonl, write_json, write_jsonl


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return smoke.build(str(tmp_path_factory.mktemp("smoke") / "eval"))


def test_smoke_copies_are_deterministic_and_labelled(smoke_root, tmp_path):
    again = smoke.build(str(tmp_path / "again"))
    for folder, _dirs, files in os.walk(smoke_root):
        for name in files:
            path = os.path.join(folder, name)
            twin = os.path.join(again, os.path.relpath(path, smoke_root))
            with open(path, "rb") as a, open(twin, "rb") as b:
                assert a.read() == b.read(), path
    benches = ["MME", "pope", "textvqa", "gqa", "vqav2", "scienceqa", "mmbench", "mm-vet", "MMMU", "mmstar"]
    for bench in benches:
        label = open(os.path.join(smoke_root, bench, "SMOKE.md")).read()
        assert "not" in label.lower() and "smoke" in label.lower()


def test_smoke_copies_follow_the_benchmarks_file_formats(smoke_root):
    import pandas as pd

    r = smoke_root
    release = os.path.join(r, "MME", "MME_Benchmark_release_version")
    assert os.path.isfile(os.path.join(release, "existence", "0000.png"))  # flat layout: image + txt side by side
    assert os.path.isdir(os.path.join(release, "scene", "questions_answers_YN"))  # images/ + questions_answers_YN
    for line in open(os.path.join(release, "existence", "0000.txt")):
        question, answer = line.rstrip("\n").split("\t")
        assert question.endswith(" Please answer yes or no.") and answer in ("Yes", "No")
    for split in ("adversarial", "popular", "random"):
        labels = read_jsonl(os.path.join(r, "pope", "coco", f"coco_pope_{split}.json"))
        assert set(labels[0]) == {"question_id", "image", "text", "label"}
    textvqa = json.load(open(os.path.join(r, "textvqa", "TextVQA_0.5.1_val.json")))
    assert textvqa["dataset_version"] == "0.5.1" and len(textvqa["data"][0]["answers"]) == 10
    llava_textvqa = read_jsonl(os.path.join(r, "textvqa", "llava_textvqa_val_v051_ocr.jsonl"))
    assert llava_textvqa[0]["question_id"] == textvqa["data"][0]["image_id"]  # LLaVA's file keys by image id
    questions = json.load(open(os.path.join(r, "gqa", "data", "testdev_balanced_questions.json")))
    q = next(iter(questions.values()))
    assert {"question", "imageId", "answer", "types", "isBalanced", "entailed"} <= set(q)
    vqa = json.load(open(os.path.join(r, "vqav2", "v2_mscoco_val2014_annotations.json")))
    assert len(vqa["annotations"][0]["answers"]) == 10 and "not" in vqa["info"]["description"].lower()
    problems = json.load(open(os.path.join(r, "scienceqa", "problems.json")))
    splits = json.load(open(os.path.join(r, "scienceqa", "pid_splits.json")))
    assert set(splits["test"]) == set(problems)
    assert any(p["image"] is None for p in problems.values())  # a text-only question, as ScienceQA has
    tsv = pd.read_table(os.path.join(r, "mmbench", "mmbench_dev_20230712.tsv"))
    assert list(tsv.columns) == ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
                                 "source", "l2-category", "comment", "split"]
    vet = json.load(open(os.path.join(r, "mm-vet", "mm-vet.json")))
    assert set(vet["v1_0"]) == {"imagename", "capability", "question", "answer"}
    mmmu_rows = mmmu.load_split(os.path.join(r, "MMMU"))
    assert {"id", "question", "options", "image_1", "image_7", "answer", "question_type"} <= set(mmmu_rows[0])
    star = mmstar.load(os.path.join(r, "mmstar", "mmstar.parquet"))
    assert {"index", "question", "image", "answer", "category", "l2_category", "meta_info"} <= set(star[0])
    assert "Options: A:" in star[0]["question"]


def test_mme_scores_acc_and_acc_plus_per_image(tmp_path):
    data = tmp_path / "MME_Benchmark_release_version" / "color"
    data.mkdir(parents=True)
    (data / "1.txt").write_text("Is it red? Please answer yes or no.\tYes\nIs it blue? Please answer yes or no.\tNo\n")
    (data / "2.txt").write_text("Is it red? Please answer yes or no.\tNo\nIs it blue? Please answer yes or no.\tYes\n")
    answers = [("color/1.png", "Is it red?", "Yes, it is."), ("color/1.png", "Is it blue?", "no"),
               ("color/2.png", "Is it red?", "yes"), ("color/2.png", "Is it blue?", "maybe")]
    write_jsonl(str(tmp_path / "answers.jsonl"), [
        {"question_id": qid, "prompt": f"{q}\n{mme.LLAVA_SUFFIX}", "text": t} for qid, q, t in answers])
    mme.convert(str(tmp_path / "answers.jsonl"), str(tmp_path / "MME_Benchmark_release_version"), str(tmp_path / "r"))
    scores = mme.calculate(str(tmp_path / "r"))
    color = scores["categories"]["color"]
    assert color["acc"] == 0.5 and color["acc_plus"] == 0.5 and color["score"] == 100.0
    assert scores["perception"] == 100.0 and "existence" in scores["missing"]
    assert [mme.parse_prediction(t) for t in ("Yes.", "no", "Not sure", "I think")] == ["yes", "no", "no", "other"]


def test_gqa_accuracy_binary_open_and_consistency(tmp_path):
    questions = {"1": {"answer": "yes", "types": {"structural": "verify", "semantic": "obj"}, "entailed": ["2"]},
                 "2": {"answer": "red", "types": {"structural": "query", "semantic": "attr"}, "entailed": ["1"]},
                 "3": {"answer": "no", "types": {"structural": "logical", "semantic": "obj"}, "entailed": []}}
    write_json(str(tmp_path / "q.json"), questions)
    write_jsonl(str(tmp_path / "a.jsonl"), [{"question_id": "1", "text": "Yes."}, {"question_id": "2", "text": "blue"},
                                            {"question_id": "3", "text": "no"}])
    gqa.convert(str(tmp_path / "a.jsonl"), str(tmp_path / "p.json"))
    result = gqa.evaluate(str(tmp_path / "q.json"), str(tmp_path / "p.json"))
    assert result["accuracy"] == pytest.approx(200 / 3) and result["binary"] == 100 and result["open"] == 0
    assert result["consistency"] == 0  # question 1 is right, its entailed question 2 is wrong
    write_jsonl(str(tmp_path / "b.jsonl"), [{"question_id": "1", "text": "yes"}])
    gqa.convert(str(tmp_path / "b.jsonl"), str(tmp_path / "p.json"))
    with pytest.raises(ValueError, match="2 of 3 balanced questions have no prediction"):
        gqa.evaluate(str(tmp_path / "q.json"), str(tmp_path / "p.json"))


def test_vqav2_submission_covers_the_split_and_vqa_accuracy_is_the_official_formula(tmp_path):
    write_jsonl(str(tmp_path / "merge.jsonl"), [{"question_id": 1, "text": "Two."}, {"question_id": 2, "text": "yes"}])
    write_jsonl(str(tmp_path / "split.jsonl"), [{"question_id": q} for q in (1, 2, 3)])
    submission = vqav2.convert(str(tmp_path / "merge.jsonl"), str(tmp_path / "split.jsonl"), str(tmp_path / "up.json"))
    assert submission == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": "yes"},
                          {"question_id": 3, "answer": ""}]
    # question 1: 2 of 10 annotators said "2" -> each 9-subset has 1 or 2 matches: (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    annotations = {"annotations": [
        {"question_id": 1, "answer_type": "number", "answers": [{"answer": "2"}] * 2 + [{"answer": "3"}] * 8},
        {"question_id": 2, "answer_type": "yes/no", "answers": [{"answer": "yes"}] * 10},
        {"question_id": 3, "answer_type": "other", "answers": [{"answer": "cat"}] * 10}]}
    write_json(str(tmp_path / "ann.json"), annotations)
    value, n, details = vqav2.accuracy(submission, str(tmp_path / "ann.json"))
    assert n == 3 and value == pytest.approx(100 * (0.6 + 1 + 0) / 3)
    assert details["per_answer_type"]["number"] == pytest.approx(60)


def test_mmbench_choice_extraction_and_circular_evaluation():
    import pandas as pd

    options = {"A": "red", "B": "blue", "C": "green"}
    assert mmbench.extract_choice("B", options) == "B"
    assert mmbench.extract_choice("(C) green.", options) == "C"
    assert mmbench.extract_choice("It is blue", options) == "B"
    assert mmbench.extract_choice("A or B", options) is None
    df = pd.DataFrame([{"index": 0, "A": "red", "B": "blue", "C": "green", "D": None, "answer": "B",
                        "category": "c", "l2-category": "l2"}])
    rounds = [{"question_id": 0, "text": "B", "options": ["red", "blue", "green"]},
              {"question_id": 0, "text": "A", "options": ["blue", "green", "red"]},  # shifted: blue is now A
              {"question_id": 0, "text": "A", "options": ["green", "red", "blue"]}]  # wrong in the third pass
    assert mmbench.dev_accuracy(df, rounds[:2])[0] == 100.0
    value, n, details = mmbench.dev_accuracy(df, rounds)
    assert value == 0.0 and n == 1 and details["circular"]


def test_mmmu_parsing_follows_mmmu_rules():
    import random

    options = {"A": "a cat", "B": "a person", "C": "a cup"}
    rng = random.Random(0)
    assert mmmu.parse_multi_choice("(B)", options, rng) == "B"
    assert mmmu.parse_multi_choice("The answer is C.", options, rng) == "C"
    assert mmmu.parse_multi_choice("I can see that this picture shows a person standing", options, rng) == "B"
    assert mmmu.is_correct_open("1", mmmu.parse_open("There is 1 shape."))
    assert mmmu.is_correct_open("3.5", mmmu.parse_open("so the result is 3.50"))
    assert not mmmu.is_correct_open("2", mmmu.parse_open("one"))
    sample = {"question": "Q?", "options": "['x', 'y']", "question_type": "multiple-choice"}
    assert mmmu.prompt(sample) == "Q?\n\n(A) x\n(B) y\n\n\nAnswer with the option's letter from the given choices directly."


def test_mmstar_exact_match_rule():
    assert mmstar.exact_match("B", "B") and mmstar.exact_match("(b) blue", "B")
    assert mmstar.exact_match("The answer is C", "C") and mmstar.exact_match("Option D.", "D")
    assert not mmstar.exact_match("red", "B") and not mmstar.exact_match("", "A")
    assert mmstar.exact_match("blue", "B")  # lmms-eval's rule looks at the first character only


def test_table_row_keeps_the_papers_columns_and_averages_what_exists(tmp_path):
    write_json(str(tmp_path / "gqa.json"), {"benchmark": "gqa", "metric": "m", "value": 50.0, "n": 6, "note": ""})
    write_json(str(tmp_path / "mmvet.json"), {"benchmark": "mmvet", "metric": "m", "value": None, "n": 3,
                                              "note": "grade elsewhere"})
    write_json(str(tmp_path / "pope.json"), {"benchmark": "pope", "metric": "m", "value": 70.0, "n": 12, "note": ""})
    row = table.row("student", table.collect(str(tmp_path)))
    assert row["GQA"] == 50.0 and row["MM-Vet"] is None and row["AVG"] == 60.0 and row["AVG_over"] == 2
    assert row["notes"] == {"MM-Vet": "grade elsewhere"}
    assert table.markdown([row]).splitlines()[0].startswith("| model | MME-P | MMB | VQA^T | GQA |")
