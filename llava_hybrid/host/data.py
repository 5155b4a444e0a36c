"""The training data path shared by SFT and distillation: the up-front check of a LLaVA data set, and the
batch collator that LLaVA's data module uses once the plugin is active.

`validate_data` reads --data_path (LLaVA's JSON: a list of {"id", "image"?, "conversations": [{"from",
"value"}, ...]}) and checks every sample, every turn and every referenced image (that it reads whole,
in parallel) before any model loads.

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
from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX

PROGRESS_FROM = 200  # image checks show a progress bar from this many images


def _sample_problem(sample) -> Optional[str]:
    """Why a LLaVA sample cannot be trained on, or None: the shape of its record and of every turn."""
    if not isinstance(sample, dict):
        return f"is a {type(sample).__name__}, not a JSON object"
    turns = sample.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "lacks a 'conversations' list of {'from', 'value'} turns"
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or not {"from", "value"} <= set(turn):
            return f"turn {j} is not a {{'from', 'value'}} object: {str(turn)[:80]}"
        for key in ("from", "value"):
            if not isinstance(turn[key], str):
                return f"turn {j} has a non-string {key!r} ({type(turn[key]).__name__}: {str(turn[key])[:40]})"
    if "image" in sample and not isinstance(sample["image"], str):
        return f"has a non-string 'image' ({type(sample['image']).__name__}); LLaVA's data module reads one file"
    placeholders = sum(turn["value"].count(DEFAULT_IMAGE_TOKEN) for turn in turns)
    if placeholders != ("image" in sample):
        return (f"has an 'image' but {placeholders} {DEFAULT_IMAGE_TOKEN} placeholders in its turns (one is needed)"
                if "image" in sample else f"has {placeholders} {DEFAULT_IMAGE_TOKEN} placeholder(s) but no 'image'")
    return None


def _sample_name(i: int, sample) -> str:
    sample_id = sample.get("id") if isinstance(sample, dict) else None
    return f"sample {i}" + (f" (id {sample_id!r})" if sample_id is not None else "")


def image_problem(path: str) -> Optional[str]:
    """Why an image file cannot be read as LLaVA's data module reads it (PIL), or None.

    Cheaper than a full decode and still whole-file: JPEG is decoded at 1/8 scale (PIL's draft mode,
    every entropy-coded byte is read), every other format is checked by PIL's verify() (PNG: every
    chunk's CRC, through IEND), so a truncated or corrupt file is found without decoding its pixels.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            else:
                image.verify()
    except Exception as err:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(err).__name__}: {err}"
    return None


def check_images(files: Dict[str, str], workers: Optional[int] = None) -> Dict[str, str]:
    """{relative name: why it cannot be read} for the images `files` (name -> path), checked in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    names = sorted(files)
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(tqdm(pool.map(lambda n: image_problem(files[n]), names), total=len(names),
                          desc="checking images", unit="image", disable=len(names) < PROGRESS_FROM, leave=False))
    return {name: why for name, why in zip(names, found) if why}


def validate_data(data_path: Optional[str], image_folder: Optional[str], show: int = 5) -> List[dict]:
    """Load and check --data_path (LLaVA JSON) and every image it references; return the samples.

    Raises ValueError naming --data_path / --image_folder, the samples (index and id) and the files:
    missing or malformed file; a sample that is not {"conversations": [{"from": str, "value": str},
    ...], "image"?: str} or whose number of <image> placeholders does not match its image; images
    referenced but no --image_folder; images missing from it; images that do not read whole
    (image_problem; checked in parallel, with a progress bar on large sets). At most `show` are listed.
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
    bad = [(i, why) for i, sample in enumerate(samples) if (why := _sample_problem(sample))]
    if bad:
        listed = "; ".join(f"{_sample_name(i, samples[i])} {why}" for i, why in bad[:show])
        raise ValueError(f"--data_path {data_path!r}: {len(bad)} of {len(samples)} samples cannot be trained on: "
                         f"{listed}")
    users: Dict[str, int] = {}  # image -> the first sample that references it
    for i, sample in enumerate(samples):
        if "image" in sample:
            users.setdefault(sample["image"], i)
    if users and not image_folder:
        raise ValueError(f"--image_folder is required: {sum(1 for s in samples if 'image' in s)} samples of "
                         f"--data_path {data_path!r} reference images")
    missing = sorted(im for im in users if not os.path.isfile(os.path.join(image_folder or "", im)))
    if missing:
        raise ValueError(f"--image_folder {image_folder!r}: {len(missing)} of {len(users)} images "
                         f"referenced by --data_path {data_path!r} are missing, e.g. {missing[:show]}")
    unreadable = check_images({im: os.path.join(image_folder, im) for im in users})
    if unreadable:
        listed = "; ".join(f"{os.path.join(image_folder, im)} ({_sample_name(users[im], samples[users[im]])}): {why}"
                           for im, why in sorted(unreadable.items(), key=lambda kv: users[kv[0]])[:show])
        raise ValueError(f"--image_folder {image_folder!r}: {len(unreadable)} of {len(users)} images referenced by "
                         f"--data_path {data_path!r} do not read whole: {listed}")
    return samples


def tokens_per_image(model) -> int:
    """How many positions one image takes in a LLaVA model's spliced sequence (tower + projector, measured on
    a blank image of the tower's size; 'pad' / 'square' images all take this many)."""
    tower = model.get_model().get_vision_tower()
    size = tower.config.image_size
    param = next(tower.parameters())
    with torch.no_grad():
        return int(model.encode_images(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)).shape[1])


def sample_lengths(samples: Sequence[dict], tokenizer, data_args, image_tokens: int) -> List[int]:
    """Each sample's length in the model once its image is spliced in, before any truncation.

    The prompt is rendered as LLaVA's data module renders it (preprocess_multimodal, then the active
    conversation template; `plain` as preprocess_plain) and tokenized once, as LLaVA tokenizes it
    (tokenizer_image_token); each <image> placeholder then counts `image_tokens` positions.
    """
    import copy

    from llava import conversation as conversation_lib
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import SeparatorStyle
    from llava.mm_utils import tokenizer_image_token
    from llava.train.train import preprocess_multimodal
    from tqdm import tqdm

    template = conversation_lib.default_conversation
    roles = {"human": template.roles[0], "gpt": template.roles[1]}
    lengths = []
    for sample in tqdm(samples, desc="measuring samples", unit="sample", disable=len(samples) < 20 * PROGRESS_FROM,
                       leave=False):
        has_image = "image" in sample
        turns = copy.deepcopy(sample["conversations"])
        if has_image:
            turns = preprocess_multimodal([turns], data_args)[0]
        if template.sep_style == SeparatorStyle.PLAIN:
            prompt = DEFAULT_IMAGE_TOKEN + turns[1]["value"] + template.sep
        else:
            conv = template.copy()
            conv.messages = []
            if roles.get(turns[0]["from"]) != conv.roles[0]:
                turns = turns[1:]
            for turn in turns:
                conv.append_message(roles.get(turn["from"], turn["from"]), turn["value"])
            prompt = conv.get_prompt()
        ids = tokenizer_image_token(prompt, tokenizer) if has_image else tokenizer(prompt).input_ids
        placeholders = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
        lengths.append(len(ids) + placeholders * (image_tokens - 1))
    return lengths


def check_sample_lengths(samples: Sequence[dict], tokenizer, data_args, image_tokens: int, max_length: int,
                         show: int = 5) -> None:
    """ValueError listing the samples (index, id, length) that do not fit in --model_max_length once their
    image is spliced in: truncating them would cut their answers, or their image, at whatever step reaches
    them. Checked before training, for SFT and distillation alike."""
    lengths = sample_lengths(samples, tokenizer, data_args, image_tokens)
    long = [(i, n) for i, n in enumerate(lengths) if n > max_length]
    if long:
        listed = ", ".join(f"{_sample_name(i, samples[i])}: {n}" for i, n in long[:show])
        raise ValueError(f"--model_max_length {max_length}: {len(long)} of {len(samples)} samples are longer once each "
                         f"image's {image_tokens} tokens are spliced in ({listed}; longest {max(lengths)} tokens). "
                         f"Pass --model_max_length {max(lengths)} or more, or shorten or drop these samples: "
                         "truncated, they would lose answer tokens or the image itself")


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
