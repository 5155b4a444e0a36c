"""Prepare easy-VQA in LLaVA's layout (+ the task tokenizer).

    python playground/data/prepare_easyvqa.py [--out playground/data/easyvqa] [--augment 5]
        [--turns 0] [--test-subset 1000]

Writes images/{train,test}/, train.json, test.jsonl, test_{N}.jsonl (the fixed subset: the first N
of numpy RandomState(0)'s permutation of the test questions, kept in question order) and tokenizer/.
"""
import argparse
import json

from llava_hybrid.easyvqa.data import prepare
from llava_hybrid.easyvqa.tokenizer import build_easyvqa_tokenizer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="playground/data/easyvqa")
    p.add_argument("--turns", type=int, default=0, help="questions per conversation (0 = all of an image)")
    p.add_argument("--augment", type=int, default=0, help="extra flipped/rotated copies per train image (0-5)")
    p.add_argument("--test-subset", type=int, default=1000, help="size of the fixed test subset (0 = none)")
    p.add_argument("--max-train-images", type=int, default=None)
    p.add_argument("--max-test-images", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = prepare(a.out, turns=a.turns, augment=a.augment, test_subset=a.test_subset or None,
                    max_train_images=a.max_train_images, max_test_images=a.max_test_images, seed=a.seed)
    paths["tokenizer"] = f"{a.out}/tokenizer"
    build_easyvqa_tokenizer(paths["tokenizer"])
    print(json.dumps(paths, indent=1))


if __name__ == "__main__":
    main()
