"""LLaVA's tokenizer_image_token takes a prompt that starts with the tokenizer's BOS id for a prompt whose
BOS the tokenizer added (Llama / Vicuna), and so drops the first token of every text chunk after an
`<image>`. ChatML tokenizers whose bos_token is `<|im_start|>` (SmolLM2) add no BOS, but every ChatML
prompt starts with `<|im_start|>` written by the template: the token right after each image (the "\\n"
of LLaVA's "<image>\\n{question}") silently disappears, in training and in every eval script alike."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def adds_bos(tokenizer) -> bool:
    """True when the tokenizer itself prepends its BOS id to a text (Llama's SentencePiece tokenizers)."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a").input_ids
    return bos is not None and len(ids) > 1 and ids[0] == bos


def _tokenizer_image_token(original, mm_utils):
    def tokenizer_image_token(prompt, tokenizer, image_token_index=None, return_tensors=None):
        """LLaVA's tokenizer_image_token; for a tokenizer that adds no BOS, the chunks joined by the image
        index with none of their tokens dropped (a BOS the template wrote is a real token)."""
        if image_token_index is None:
            from llava.constants import IMAGE_TOKEN_INDEX as image_token_index
        if adds_bos(tokenizer):
            return original(prompt, tokenizer, image_token_index, return_tensors)
        chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
        input_ids = list(chunks[0])
        for chunk in chunks[1:]:
            input_ids += [image_token_index] + list(chunk)
        if return_tensors is None:
            return input_ids
        if return_tensors == "pt":
            import torch
            return torch.tensor(input_ids, dtype=torch.long)
        raise ValueError(f"Unsupported tensor type: {return_tensors}")

    return tokenizer_image_token


PATCH = Patch(
    name="image_token_bos",
    reason=("llava.mm_utils.tokenizer_image_token sets offset 1 when the prompt's first token is the tokenizer's "
            "bos_token_id and then drops the first token of every chunk after an <image>, assuming the tokenizer "
            "prepended a BOS to each chunk; a ChatML tokenizer with bos <|im_start|> (SmolLM2) adds none, so the "
            "'\\n' after the image is lost in training and eval: only a tokenizer that adds a BOS keeps LLaVA's "
            "behaviour"),
    upstream="llava.mm_utils.tokenizer_image_token (imported by name in llava.train.train, llava.eval.*, llava.serve.*)",
    target="llava.mm_utils",
    versions={"llava-torch": "<=1.2.2"},
    note="seen on 1.2.2.post1, the last release; LLaVA's own bug, any transformers; unchanged for tokenizers that "
         "add a BOS (Llama) and for prompts that do not start with the BOS id (phi)",
    sites=(Site("llava.mm_utils", "", "tokenizer_image_token", _tokenizer_image_token),),
)
