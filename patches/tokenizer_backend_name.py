"""(n) Tokenizers saved by transformers 5 name their class `TokenizersBackend`; 4.x does not know it."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "tokenizer_backend_name"
REASON = ("transformers 5 writes tokenizer_class 'TokenizersBackend' (its fast-tokenizer base) into "
          "tokenizer_config.json; 4.x's AutoTokenizer cannot resolve the name, so a checkpoint made on the 5.x "
          "lane (e.g. the shipped easy-VQA teacher) fails to load on 4.x: map it to PreTrainedTokenizerFast, "
          "the same class under its 4.x name")
UPSTREAM = "transformers.models.auto.tokenization_auto.tokenizer_class_from_name (AutoTokenizer.from_pretrained)"
VERSIONS = "transformers < 5.0"
TARGET = "transformers.models.auto.tokenization_auto"


def needed() -> bool:
    """True for transformers 4.x."""
    return transformers_version() < (5, 0, 0)


def apply() -> bool:
    """Resolve 'TokenizersBackend' to PreTrainedTokenizerFast; True if it changed."""
    auto = importlib.import_module(TARGET)
    if _patching.is_replaced(auto, "tokenizer_class_from_name"):
        return False
    original = auto.tokenizer_class_from_name

    def tokenizer_class_from_name(class_name: str):
        """transformers' lookup, plus 5.x's name for the fast tokenizer base class."""
        if class_name == "TokenizersBackend":
            class_name = "PreTrainedTokenizerFast"
        return original(class_name)

    _patching.replace_attr(auto, "tokenizer_class_from_name", tokenizer_class_from_name)
    return True
