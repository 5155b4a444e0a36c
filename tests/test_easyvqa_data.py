"""easy-VQA data prep, task tokenizer and scorer: determinism, formats, question types, pad == eos."""
import json

import pytest

from llava_hybrid.easyvqa import data, score, tokenizer


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("easyvqa")
    paths = data.prepare(str(out), augment=2, test_subset=20, max_train_images=6, max_test_images=4)
    return out, paths


@pytest.fixture(scope="module")
def task_tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return tokenizer.build_easyvqa_tokenizer(str(out)), out


def test_question_types_cover_answers():
    questions, _ = data.load_split("test")
    types = {q.qtype for q in questions}
    assert types == set(data.QUESTION_TYPES)
    for q in questions:
        if q.qtype == "shape":
            assert q.answer in data.SHAPES and q.text.startswith("what")
        if q.qtype == "color":
            assert q.answer not in data.SHAPES + ("yes", "no") and q.text.startswith("what")


def test_train_json_is_llava_format_and_grouped(tiny_data):
    out, paths = tiny_data
    records = json.load(open(paths["train"]))
    assert len(records) == 6 * 3  # 6 images x (original + 2 augmentations), all questions in one conversation
    for r in records:
        assert set(r) == {"id", "image", "conversations"}
        assert (out / "images" / r["image"]).is_file()
        conv = r["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in conv) == 1
    assert len({r["id"] for r in records}) == len(records)


def test_turn_chunks_and_bad_flags():
    questions, _ = data.load_split("train")
    records = data.build_train_records(questions, turns=1, max_images=3)
    n = sum(len(v) for v in list(data.group_by_image(questions).values())[:3])
    assert len(records) == n and all(len(r["conversations"]) == 2 for r in records)
    with pytest.raises(ValueError, match="--augment"):
        data.build_train_records(questions, augment=9)
    with pytest.raises(ValueError, match="--test-subset"):
        data.fixed_subset([{"question_id": 0}], 5)


def test_augmented_images_preserve_pixels_up_to_symmetry(tiny_data):
    from PIL import Image
    import numpy as np

    out, _ = tiny_data
    stem = sorted(p.stem for p in (out / "images" / "train").glob("*.png") if p.stem.isdigit())[0]
    orig = np.asarray(Image.open(out / "images" / "train" / f"{stem}.png"))
    flip = np.asarray(Image.open(out / "images" / "train" / f"{stem}_flip.png"))
    assert np.array_equal(flip, orig[:, ::-1])


def test_eval_files_and_fixed_subset(tiny_data):
    out, paths = tiny_data
    rows = [json.loads(l) for l in open(paths["test"])]
    assert {"question_id", "image", "text", "answer", "type"} <= set(rows[0])
    assert len({r["question_id"] for r in rows}) == len(rows)
    sub = [json.loads(l) for l in open(paths["test_subset"])]
    assert len(sub) == 20 and sub == data.fixed_subset(rows, 20)
    assert [r["question_id"] for r in sub] == sorted(r["question_id"] for r in sub)


def test_prepare_is_deterministic(tiny_data, tmp_path):
    _, paths = tiny_data
    again = data.prepare(str(tmp_path), augment=2, test_subset=20, max_train_images=6, max_test_images=4)
    for key in ("train", "test", "test_subset"):
        assert open(paths[key]).read() == open(again[key]).read()


def test_tokenizer_phi_conditions(task_tokenizer):
    from transformers import AutoTokenizer

    tok, path = task_tokenizer
    loaded = AutoTokenizer.from_pretrained(str(path))
    for t in (tok, loaded):
        assert t.eos_token == t.pad_token == t.unk_token == "<|endoftext|>"
        assert t.pad_token_id == t.eos_token_id
        assert t.bos_token is None
    text = tokenizer.template_texts()[0] + " USER: <image>\nwhat is the blue shape? ASSISTANT: circle<|endoftext|>"
    ids = loaded(text).input_ids
    assert ids[-1] == loaded.eos_token_id and ids[0] != loaded.eos_token_id  # eos kept, no BOS added
    assert loaded.decode(ids) == text  # byte-level round trip
    assert len(loaded) < 1000
    for word in ("circle", "rectangle", "triangle", "yes", "teal"):
        assert len(loaded(" " + word).input_ids) == 1  # every answer is one token


def test_tokenizer_is_deterministic(task_tokenizer, tmp_path):
    tok, path = task_tokenizer
    again = tokenizer.build_easyvqa_tokenizer(str(tmp_path))
    assert tok.get_vocab() == again.get_vocab()
    assert (path / "tokenizer.json").read_text() == (tmp_path / "tokenizer.json").read_text()


def test_scorer_exact_match_per_type():
    qs = [{"question_id": 0, "answer": "yes", "type": "yes/no"},
          {"question_id": 1, "answer": "circle", "type": "shape"},
          {"question_id": 2, "answer": "red", "type": "color"},
          {"question_id": 3, "answer": "no", "type": "yes/no"}]
    ans = [{"question_id": 0, "text": " Yes."}, {"question_id": 1, "text": "triangle"},
           {"question_id": 2, "text": "red"}]
    r = score.score(qs, ans)
    assert r["accuracy"] == 0.5 and r["n"] == 4 and r["answered"] == 3
    assert r["per_type"]["yes/no"]["accuracy"] == 0.5
    assert r["per_type"]["shape"]["accuracy"] == 0.0
    assert r["per_type"]["color"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="answer"):
        score.score([{"question_id": 0}], ans)


def test_balance_makes_yes_and_no_equally_likely_per_template():
    import collections

    questions, _ = data.load_split("train")
    assert data.template("is there a red shape?") == "is there a C shape?"
    assert data.template("what color is the circle?") == "what color is the S?"

    def answer_share(records):
        counts = collections.defaultdict(collections.Counter)
        for rec in records:
            turns = rec["conversations"]
            for human, gpt in zip(turns[::2], turns[1::2]):
                if gpt["value"] in ("yes", "no"):
                    counts[data.template(human["value"].replace("<image>\n", ""))][gpt["value"]] += 1
        return {t: c["yes"] / (c["yes"] + c["no"]) for t, c in counts.items()}

    plain = answer_share(data.build_train_records(questions, turns=1))
    balanced = answer_share(data.build_train_records(questions, turns=1, balance=True))
    assert max(abs(p - 0.5) for p in plain.values()) > 0.35          # "is there a C shape?": ~12 % yes
    assert max(abs(p - 0.5) for p in balanced.values()) < 0.1
    # copies live in their own conversations: no conversation asks the same question twice
    for rec in data.build_train_records(questions, turns=0, balance=True, max_images=50):
        asked = [t["value"].replace("<image>\n", "") for t in rec["conversations"][::2]]
        assert len(asked) == len(set(asked))
    # open (shape / colour) questions are never repeated
    def open_answers(records):
        return sorted(t["value"] for r in records for t in r["conversations"][1::2] if t["value"] not in ("yes", "no"))
    assert open_answers(data.build_train_records(questions, turns=1, balance=True)) == \
        open_answers(data.build_train_records(questions, turns=1))


def test_text_prior_answers_each_template_with_its_majority(tmp_path):
    rows = [{"question_id": 0, "text": "is there a red shape?", "answer": "no", "type": "yes/no"},
            {"question_id": 1, "text": "is there a blue shape?", "answer": "yes", "type": "yes/no"},
            {"question_id": 2, "text": "is there not a green shape?", "answer": "yes", "type": "yes/no"},
            {"question_id": 3, "text": "what color is the shape?", "answer": "teal", "type": "color"}]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prior = score.text_prior(str(path))
    # train: "is there a C shape?" is mostly "no", its negation mostly "yes"; no colour is a majority of 1/8+
    assert prior["per_type"]["yes/no"] == {"accuracy": 2 / 3, "n": 3}
    assert prior["n"] == 4 and prior["per_type"]["color"]["n"] == 1
