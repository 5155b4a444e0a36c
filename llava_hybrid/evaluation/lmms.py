"""An lmms-eval model for this project's checkpoints: the teacher (llava_phi / tiny_llava_phi) and every
hybrid student (llava_hybrid_phi / llava_hybrid_llama), one class, any device and dtype.

    lmms-eval --model llava_hybrid --model_args pretrained=<dir>,device=cpu,dtype=float32 --tasks <task>

Registered through lmms-eval's entry-point group `lmms_eval.models` (pyproject.toml -> `manifest` below),
so no fork or environment variable is needed. lmms-eval's own `llava` / `tinyllava` wrappers hard-code
`cuda:N` and fp16; this one loads through LLaVA's (patched) load_pretrained_model on the device asked
for, fp16 on CUDA and float32 on the CPU unless `dtype` says otherwise.

generate_until: requests grouped by generation kwargs (lmms-eval's Collator), `batch_size` prompts per
generate call, left-padded (LLaVA's tokenizer_padding_side = left: the projector's image tokens are
spliced in, then the rows padded on the left, so a padded row generates what it would alone); `until`
strings cut the text. loglikelihood: `batch_size` (context, continuation) pairs per forward; for the
continuation as the conversation template's assistant turn, its mean negative log-likelihood per token
(what lmms-eval 0.7.3 consumes: multiple_choice picks the argmin, and its own llava wrapper returns this
loss, although the base class's docstring speaks of a log-probability) and whether greedy decoding would
have produced it.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from lmms_eval import utils
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class LoglikelihoodResult(GenerationResult):
    """(mean NLL, is_greedy) that survives lmms-eval 0.7.3's evaluator: it passes every response through
    unwrap_generation_output, which turns a plain tuple into its str() (lmms-eval's own llava wrapper loses its
    multiple-choice scores that way) but hands a GenerationResult's payload on unchanged. Unpacks as the tuple."""

    def __init__(self, logprob: float, is_greedy: bool):
        super().__init__(text=(logprob, is_greedy))

    def __iter__(self):
        return iter(self.text)


def manifest():
    """The entry point's payload: model id `llava_hybrid` (alias `matvlm`) -> this module's class."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="llava_hybrid", simple_class_path="llava_hybrid.evaluation.lmms.LlavaHybrid",
                         aliases=("matvlm",))


class LlavaHybrid(lmms):
    """lmms-eval model over LLaVA's loader and conversation templates (see the module docstring)."""

    is_simple = True

    def __init__(self, pretrained: str, device: Optional[str] = None, dtype: str = "auto", batch_size: int = 1,
                 conv_template: str = "phi", max_new_tokens: int = 128, use_cache: bool = True, **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"llava_hybrid: unknown --model_args {sorted(kwargs)} (known: pretrained, device, "
                             "dtype, batch_size, conv_template, max_new_tokens, use_cache)")
        import llava_hybrid

        llava_hybrid.activate()
        from llava.conversation import conv_templates
        from llava.model.builder import load_pretrained_model

        if conv_template not in conv_templates:
            raise ValueError(f"llava_hybrid: conv_template={conv_template!r} is not a LLaVA template "
                             f"({', '.join(sorted(conv_templates))})")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"llava_hybrid: device={device} but torch sees no CUDA device; pass device=cpu")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"llava_hybrid: dtype={dtype!r}; choose auto, {', '.join(DTYPES)}")
        torch_dtype = None if dtype == "auto" else DTYPES[dtype]
        self._tokenizer, self._model, self._image_processor, self._max_length = load_pretrained_model(
            pretrained, None, str(pretrained).rstrip("/").split("/")[-1], device=str(device), device_map=str(device),
            torch_dtype=torch_dtype)
        self._model.eval()
        self._model.config.tokenizer_padding_side = "left"  # batched prompts: padding before the tokens
        self._device = torch.device(device)
        self.conv_template = conv_template
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.use_cache = str(use_cache).lower() not in ("false", "0")

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._device

    # ---- prompts -------------------------------------------------------------------------------------

    def _conversation(self, context: str, n_images: int, answer: Optional[str] = None) -> str:
        """The template's prompt: user turn (image placeholders first, as LLaVA), assistant turn open or set."""
        from llava.constants import DEFAULT_IMAGE_TOKEN
        from llava.conversation import conv_templates

        if n_images and DEFAULT_IMAGE_TOKEN not in context:
            context = " ".join([DEFAULT_IMAGE_TOKEN] * n_images) + "\n" + context
        conv = conv_templates[self.conv_template].copy()
        conv.append_message(conv.roles[0], context)
        conv.append_message(conv.roles[1], answer)
        return conv.get_prompt()

    def _ids(self, prompt: str) -> torch.Tensor:
        from llava.constants import IMAGE_TOKEN_INDEX
        from llava.mm_utils import tokenizer_image_token

        return tokenizer_image_token(prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")

    def _images(self, visuals: list):
        """PIL images -> pixel values in the vision tower's dtype on the model's device, or None."""
        from llava.mm_utils import process_images

        if not visuals:
            return None, None
        images = process_images(visuals, self._image_processor, self.model.config)
        dtype = self.model.get_model().get_vision_tower().dtype
        move = (lambda t: t.to(device=self.device, dtype=dtype))
        return ([move(i) for i in images] if isinstance(images, list) else move(images)), [v.size for v in visuals]

    def _pad(self, rows: List[torch.Tensor], left: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token rows -> (ids (B, L), attention mask (B, L)), padded with the pad id on the left or right."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, span], mask[i, span] = r, 1
        return ids.to(self.device), mask.to(self.device)

    def _visuals(self, doc_to_visual, task, split, doc_id) -> list:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        return [v.convert("RGB") for v in (visuals or []) if v is not None]

    # ---- lmms-eval API --------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_until(self, requests: List[Instance]) -> List[str]:
        results = []
        collator = utils.Collator([r.args for r in requests], lambda x: (-len(x[0]), x[0]), grouping=True)
        progress = tqdm(total=len(requests), desc="llava_hybrid generate", disable=self.rank != 0)
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            contexts, all_kwargs, doc_to_visual, doc_ids, tasks, splits = zip(*chunk)
            kwargs = dict(all_kwargs[0])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            per_row = [self._visuals(doc_to_visual[0], tasks[0], splits[0], d) for d in doc_ids]
            counts = {len(v) for v in per_row}
            if len(counts) > 1:
                raise ValueError("llava_hybrid: a batch mixes documents with different image counts; use batch_size=1")
            images, sizes = self._images([v for row in per_row for v in row])
            ids, mask = self._pad([self._ids(self._conversation(c, len(v))) for c, v in zip(contexts, per_row)],
                                  left=True)
            temperature = float(kwargs.get("temperature", 0) or 0)
            out = self.model.generate(
                ids, attention_mask=mask, images=images, image_sizes=sizes, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=kwargs.get("top_p"),
                num_beams=int(kwargs.get("num_beams", 1) or 1),
                max_new_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)), use_cache=self.use_cache,
                pad_token_id=self.tokenizer.pad_token_id)
            for text in self.tokenizer.batch_decode(out, skip_special_tokens=True):
                for stop in until:
                    if stop and stop in text:
                        text = text.split(stop)[0]
                results.append(text.strip())
                progress.update(1)
        progress.close()
        return collator.get_original(results)

    @torch.no_grad()
    def loglikelihood(self, requests: List[Instance]) -> List[LoglikelihoodResult]:
        results = []
        args = [r.args for r in requests]
        progress = tqdm(total=len(args), desc="llava_hybrid loglikelihood", disable=self.rank != 0)
        for start in range(0, len(args), self.batch_size):
            batch = args[start: start + self.batch_size]
            rows, prefix_lengths, visuals = [], [], []
            for context, target, doc_to_visual, doc_id, task, split in batch:
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else target(doc)
                # lmms-eval prefixes choices with its target delimiter (" "); the template's assistant turn
                # already starts after its separator, so the space would be a second one
                continuation = continuation.lstrip()
                row_visuals = self._visuals(doc_to_visual, task, split, doc_id)
                visuals += row_visuals
                prefix = self._ids(self._conversation(context, len(row_visuals)))
                full = self._ids(self._conversation(context, len(row_visuals), continuation))
                shared = 0  # the context's tokens are a prefix of the full prompt's (checked, not assumed)
                while shared < min(len(prefix), len(full)) and prefix[shared] == full[shared]:
                    shared += 1
                rows.append(full)
                prefix_lengths.append(shared)
            ids, mask = self._pad(rows, left=False)
            labels = ids.clone()
            for i, (row, shared) in enumerate(zip(rows, prefix_lengths)):
                labels[i, :shared] = -100
                labels[i, len(row):] = -100
            images, sizes = self._images(visuals)
            # LLaVA splices the image features in; labels travel with them (-100 over the image tokens)
            (_, position_ids, attention_mask, _, embeds, labels) = self.model.prepare_inputs_labels_for_multimodal(
                ids, None, mask, None, labels, images, image_sizes=sizes)
            logits = self.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V)
            target = labels[:, 1:]  # (B, L-1)
            scored = target != -100
            token_logp = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]  # (B, L-1)
            greedy = logp.argmax(-1) == target
            for i in range(len(batch)):
                # lmms-eval's convention (its multiple_choice takes the argmin; its llava wrapper returns the
                # loss): the continuation's mean negative log-likelihood per token, lower = more likely
                results.append(LoglikelihoodResult(float(-token_logp[i][scored[i]].mean()),
                                                   bool(greedy[i][scored[i]].all())))
                progress.update(1)
        progress.close()
        return results

    def generate_until_multi_round(self, requests) -> List[str]:
        raise NotImplementedError("llava_hybrid: multi-round generation is not implemented; use generate_until tasks")
