"""Tokenizers saved by transformers 5 name their class `TokenizersBackend`; 4.x does not know it."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site

TARGET = "transformers.models.auto.tokenization_auto"


def _lookup(original, auto_module):
    def tokenizer_class_from_name(class_name: str):
        """transformers' lookup, plus 5.x's name for the fast tokenizer base class."""
        if class_name == "TokenizersBackend":
            class_name = "PreTrainedTokenizerFast"
        return original(class_name)

    return tokenizer_class_from_name


PATCH = Patch(
    name="tokenizer_backend_name",
    reason=("transformers 5 writes tokenizer_class 'TokenizersBackend' (its fast-tokenizer base) into "
            "tokenizer_config.json; 4.x's AutoTokenizer cannot resolve the name, so a checkpoint made on the 5.x "
            "lane (e.g. the shipped easy-VQA teacher) fails to load on 4.x: map it to PreTrainedTokenizerFast, "
            "the same class under its 4.x name"),
    upstream="transformers.models.auto.tokenization_auto.tokenizer_class_from_name (AutoTokenizer.from_pretrained)",
    target=TARGET,
    versions={"transformers": "<5.0"},
    sites=(Site(TARGET, "", "tokenizer_class_from_name", _lookup),),
)
