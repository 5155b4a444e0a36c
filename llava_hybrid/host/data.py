"""The training data path shared by SFT and distillation: the up-front check of a LLaVA data set, and the
batch collator that LLaVA's data module uses once the plugin is active.

`validate_data` reads --data_path (LLaVA's JSON: a list of {"id", "image"?, "conversations": [{"from",
"value"}, ...]}) and checks every sample and every referenced image before any model loads.

`DataCollatorForPhi` replaces LLaVA's `DataCollatorForSupervisedDataset` (host.preprocess.register):
LLaVA's sets `attention_mask = input_ids != pad_token_id`, and `prepare_inputs_labels_for_multimodal`
then deletes every masked position, so with pad == eos (Phi-2) each `<|endoftext|>` that ends an answer
disappears from inputs and labels and the model never learns to stop. This one masks by true length.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from llava.constants import IGNORE_INDEX


def validate_data(data_path: Optional[str], image_folder: Optional[str], show: int = 5) -> List[dict]:
    """Load and check --data_path (LLaVA JSON) and every image it references; return the samples.

    Raises ValueError naming --data_path / --image_folder: missing or malformed file, a sample
    without a `conversations` list of {"from", "value"} turns, images referenced but no
    --image_folder, or images missing from it (the first `show` listed).
    """
    if not data_path:
        raise ValueError("--data_path is required (a LLaVA-format JSON list of samples)")
    if not os.path.isfile(data_path):
        raise ValueError(f"--data_path {data_path!r}: no such file")
    try:
        with open(data_path) as f:
            samples = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"--data_path {data_path!r}: malformed JSON ({err})") from err
    if not isinstance(samples, list) or not samples:
        raise ValueError(f"--data_path {data_path!r}: expected a non-empty JSON list of samples")
    for i, sample in enumerate(samples):
        turns = sample.get("conversations") if isinstance(sample, dict) else None
        if not isinstance(turns, list) or not turns or not all(
                isinstance(t, dict) and {"from", "value"} <= set(t) for t in turns):
            raise ValueError(f"--data_path {data_path!r}: sample {i} lacks a 'conversations' list of "
                             f"{{'from', 'value'}} turns: {str(sample)[:200]}")
    images = [s["image"] for s in samples if "image" in s]
    if images and not image_folder:
        raise ValueError(f"--image_folder is required: {len(images)} samples of --data_path "
                         f"{data_path!r} reference images")
    missing = sorted({im for im in images if not os.path.isfile(os.path.join(image_folder or "", im))})
    if missing:
        raise ValueError(f"--image_folder {image_folder!r}: {len(missing)} of {len(set(images))} images "
                         f"referenced by --data_path {data_path!r} are missing, e.g. {missing[:show]}")
    return samples


@dataclass
class DataCollatorForPhi:
    """Right-pad a batch; attention_mask from the true lengths, never from `ids != pad_token_id`.

    With pad == eos (Phi-2), `<|endoftext|>` inside a sample stays attended, and so stays in the
    inputs and labels after `prepare_inputs_labels_for_multimodal` drops unattended positions.
    Same keys as LLaVA's collator: input_ids (B, L), labels (B, L), attention_mask (B, L) bool,
    images (B, 3, H, W) when every image has one shape, else a list.
    """

    tokenizer: object

    def __call__(self, instances: Sequence[Dict]) -> Dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError(f"tokenizer {getattr(self.tokenizer, 'name_or_path', '')!r} has no "
                             f"pad token; set tokenizer.pad_token (Phi-2: <|endoftext|>)")
        max_len = self.tokenizer.model_max_length
        input_ids = [inst["input_ids"][:max_len] for inst in instances]
        labels = [inst["labels"][:max_len] for inst in instances]
        lengths = torch.tensor([len(ids) for ids in input_ids])  # (B,)
        width = int(lengths.max())
        batch_ids = torch.full((len(instances), width), pad_id, dtype=torch.long)  # (B, L)
        batch_labels = torch.full((len(instances), width), IGNORE_INDEX, dtype=torch.long)  # (B, L)
        for b, (ids, lab) in enumerate(zip(input_ids, labels)):
            batch_ids[b, :len(ids)] = ids
            batch_labels[b, :len(lab)] = lab
        attention_mask = torch.arange(width)[None, :] < lengths[:, None]  # (B, L) bool
        batch = dict(input_ids=batch_ids, labels=batch_labels, attention_mask=attention_mask)
        if "image" in instances[0]:
            images = [inst["image"] for inst in instances]
            if all(x is not None and x.shape == images[0].shape for x in images):
                batch["images"] = torch.stack(images)  # (B, 3, H, W)
            else:
                batch["images"] = images
        return batch
