"""One decode loop for every model of this project (hybrid or all-attention): prefill once (the Mamba
layers run their chunked scan), then one token per step against a pre-allocated HybridCache.

Modes: greedy, sampling (temperature, top_p, a torch.Generator for reproducibility), beam search
(num_beams, length penalty 1: a finished hypothesis scores sum(log p) / its number of new tokens).
Batches may be LEFT padded (attention_mask, 1 = token): positions skip the padding, attention masks it
and the Mamba mixers zero it, so a padded row generates what it would alone. A row stops at its eos
and emits pad afterwards. Returns only the new tokens (B, T), T <= max_new_tokens.

The model must provide `next_token_logits(input_ids=, inputs_embeds=, attention_mask=, position_ids=,
cache=) -> (B, V)`, `allocate_cache(batch, max_length)` and `get_input_embeddings()` (HybridCausalLMBase).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import positions_from_mask

_IGNORED_KWARGS = {"use_cache", "output_attentions", "output_hidden_states", "return_dict_in_generate",
                   "synced_gpus", "repetition_penalty", "top_k", "length_penalty", "early_stopping",
                   "min_new_tokens", "num_return_sequences", "image_sizes", "modalities"}
_UNSUPPORTED_KWARGS = {"stopping_criteria", "logits_processor", "prefix_allowed_tokens_fn", "streamer",
                       "constraints", "force_words_ids", "assistant_model", "max_length"}


@dataclass
class GenerationOutput:
    """sequences: (B, T) new tokens; scores: (B,) beam score of each returned sequence (beam search), else None."""

    sequences: torch.Tensor
    scores: torch.Tensor | None = None


class _Stepper:
    """Runs the model on the prompt (prefill) and then on one token at a time, keeping mask, positions
    and cache (or, without a cache, the whole sequence so far) for a batch of rows."""

    def __init__(self, model, input_ids, inputs_embeds, attention_mask, max_new_tokens, use_cache):
        self.model, self.use_cache = model, use_cache
        prompt = input_ids if input_ids is not None else inputs_embeds
        b, l = prompt.shape[:2]
        device = prompt.device
        if attention_mask is None:
            attention_mask = torch.ones(b, l, dtype=torch.long, device=device)
        self.mask = attention_mask.long()  # (B, P)
        self.padded = not bool(self.mask.all())
        self.positions = positions_from_mask(self.mask)  # (B, P)
        embed = model.get_input_embeddings()
        self.embeds = inputs_embeds if inputs_embeds is not None else embed(input_ids)  # (B, P, D)
        self.cache = model.allocate_cache(b, l + max_new_tokens) if use_cache else None

    def _run(self, embeds, positions) -> torch.Tensor:
        mask = self.mask if self.padded else None
        return self.model.next_token_logits(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                            cache=self.cache).float()  # (B, V)

    def prefill(self) -> torch.Tensor:
        """Logits after the prompt: (B, V)."""
        return self._run(self.embeds, self.positions)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens (B,) and return the next logits (B, V)."""
        new_embeds = self.model.get_input_embeddings()(tokens[:, None]).to(self.embeds.dtype)  # (B, 1, D)
        new_pos = self.positions[:, -1:] + 1  # (B, 1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.positions = torch.cat([self.positions, new_pos], dim=1)
        if self.use_cache:
            return self._run(new_embeds, new_pos)
        self.embeds = torch.cat([self.embeds, new_embeds], dim=1)
        return self._run(self.embeds, self.positions)

    def reorder(self, rows: torch.Tensor) -> None:
        """Rows i <- rows[i] (beam search)."""
        self.mask, self.positions = self.mask[rows], self.positions[rows]
        if self.cache is not None:
            self.cache.reorder(rows)
        else:
            self.embeds = self.embeds[rows]


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator) -> torch.Tensor:
    """Next token per row from logits (B, V): argmax, or a sample after temperature and nucleus (top_p)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits / temperature, dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _greedy_or_sample(stepper, max_new_tokens, eos_ids, pad_id, do_sample, temperature, top_p, generator):
    logits = stepper.prefill()
    b = logits.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    out = []
    for t in range(max_new_tokens):
        token = _pick(logits, do_sample, temperature, top_p, generator)  # (B,)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        out.append(token)
        if eos_ids is not None:
            done |= torch.isin(token, eos_ids)
            if bool(done.all()):
                break
        if t + 1 < max_new_tokens:
            logits = stepper.step(token)
    return GenerationOutput(torch.stack(out, dim=1) if out else logits.new_zeros(b, 0, dtype=torch.long))


def _beam_search(stepper, batch, num_beams, max_new_tokens, eos_ids, pad_id):
    """Beam search over `batch` prompts, each repeated num_beams times in the stepper (rows b*K + k).

    Alive beams keep the num_beams best running sums of log p; a candidate ending in eos (ranked within
    the first num_beams) becomes a finished hypothesis scored sum / length. A prompt is done when it has
    num_beams hypotheses and none of its alive beams can still beat the worst (transformers' rule for
    length penalty 1: best running sum / current length). At the end alive beams join as hypotheses.
    """
    k = num_beams
    eos = set(eos_ids.tolist()) if eos_ids is not None else set()
    logp = F.log_softmax(stepper.prefill(), dim=-1)  # (B*K, V)
    vocab, device = logp.shape[-1], logp.device
    running = torch.full((batch, k), float("-inf"), device=device)
    running[:, 0] = 0.0  # all beams start equal: expand only the first one at step 0
    tokens = torch.zeros(batch, k, 0, dtype=torch.long, device=device)  # (B, K, t)
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max_new_tokens):
        # 1. the 2K best continuations of each prompt's beams: (B, K*V) -> (B, 2K)
        cand = (running[:, :, None] + logp.view(batch, k, vocab)).view(batch, k * vocab)
        top_scores, top_idx = (x.tolist() for x in cand.topk(2 * k, dim=-1))
        # 2. eos candidates become hypotheses, the others fill the K new beams
        new_running = torch.full((batch, k), float("-inf"), device=device)
        parent = torch.zeros(batch, k, dtype=torch.long, device=device)
        new_tok = torch.full((batch, k), pad_id, dtype=torch.long, device=device)
        for b in range(batch):
            filled = 0
            for rank, (score, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                if done[b] or filled == k:
                    break
                beam, tok = divmod(idx, vocab)
                if tok in eos:
                    if rank < k:
                        hypothesis = torch.cat([tokens[b, beam], tokens.new_tensor([tok])])  # (t+1,)
                        finished[b].append((score / (t + 1), hypothesis))
                    continue
                new_running[b, filled], parent[b, filled], new_tok[b, filled] = score, beam, tok
                filled += 1
            # 3. keep the K best hypotheses; done when no alive beam can beat the worst of them
            finished[b] = sorted(finished[b], key=lambda h: -h[0])[:k]
            best_alive = new_running[b].max().item() / (t + 1)
            done[b] = done[b] or (len(finished[b]) == k and finished[b][-1][0] >= best_alive)
        # 4. move beams to their parents' rows and append the new tokens
        rows = (torch.arange(batch, device=device)[:, None] * k + parent).view(-1)  # (B*K,)
        tokens = torch.cat([tokens.view(batch * k, -1)[rows].view(batch, k, -1), new_tok[:, :, None]], dim=-1)
        running = new_running
        if all(done) or t + 1 == max_new_tokens:
            break
        stepper.reorder(rows)
        logp = F.log_softmax(stepper.step(new_tok.view(-1)), dim=-1)
    # 5. unfinished prompts: their alive beams are hypotheses too; return each prompt's best
    length = tokens.shape[-1]
    for b in range(batch):
        if not done[b]:
            alive = [j for j in range(k) if running[b, j] > float("-inf")]
            finished[b] += [(running[b, j].item() / length, tokens[b, j]) for j in alive]
    best = [max(hyps, key=lambda h: h[0]) for hyps in finished]
    sequences = torch.full((batch, max(len(seq) for _, seq in best)), pad_id, dtype=torch.long, device=device)
    for b, (_, seq) in enumerate(best):
        sequences[b, : len(seq)] = seq
    return GenerationOutput(sequences, torch.tensor([score for score, _ in best], device=device))


@torch.no_grad()
def generate_tokens(model, input_ids=None, inputs_embeds=None, attention_mask=None, *, max_new_tokens=16,
                    do_sample=False, temperature=1.0, top_p=1.0, num_beams=1, eos_token_id=None,
                    pad_token_id=None, use_cache=True, generator=None) -> GenerationOutput:
    """Generate up to max_new_tokens new tokens per row; see the module docstring.

    input_ids (B, P) or inputs_embeds (B, P, D); attention_mask (B, P) with left padding; eos_token_id
    an int or a list; pad_token_id defaults to the (first) eos, else 0. use_cache=False recomputes the
    whole sequence each step (a reference for tests). Returns GenerationOutput(sequences (B, T), scores).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("generate: pass exactly one of input_ids or inputs_embeds")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_beams < 1 or (num_beams > 1 and do_sample):
        raise ValueError(f"generate: num_beams={num_beams} with do_sample={do_sample} is not supported "
                         "(beam search is deterministic; use num_beams=1 to sample)")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(
            f"generate: do_sample needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}"
        )
    prompt = input_ids if input_ids is not None else inputs_embeds
    device = prompt.device
    if isinstance(eos_token_id, int):
        eos_token_id = [eos_token_id]
    eos_ids = torch.tensor(list(eos_token_id), device=device) if eos_token_id else None
    if pad_token_id is None:
        pad_token_id = int(eos_ids[0]) if eos_ids is not None else 0

    if num_beams > 1:
        batch = prompt.shape[0]
        expand = lambda x: None if x is None else x.repeat_interleave(num_beams, dim=0)  # noqa: E731
        stepper = _Stepper(model, expand(input_ids), expand(inputs_embeds), expand(attention_mask),
                           max_new_tokens, use_cache)
        return _beam_search(stepper, batch, num_beams, max_new_tokens, eos_ids, pad_token_id)
    stepper = _Stepper(model, input_ids, inputs_embeds, attention_mask, max_new_tokens, use_cache)
    return _greedy_or_sample(
        stepper, max_new_tokens, eos_ids, pad_token_id, do_sample, temperature, top_p, generator
    )


def _generation_defaults(model) -> list:
    """Where eos/pad defaults come from, first non-None wins: model.generation_config, then model.config.

    transformers < 5 gives every model a generation_config copied from its config at init; while that
    copy is unmodified it is stale after a config edit, so (as transformers' own legacy rule) the config
    is read instead. transformers 5 models of ours have no generation_config at all.
    """
    gen = getattr(model, "generation_config", None)
    derived_and_unmodified = (
        gen is not None and getattr(gen, "_from_model_config", False)
        and getattr(gen, "_original_object_hash", None) == hash(gen)
    )
    if gen is None or derived_and_unmodified:
        return [model.config]
    return [gen, model.config]


def generate_from_kwargs(model, inputs=None, **kwargs) -> torch.Tensor:
    """`model.generate(...)` with HF-style keyword arguments -> new tokens (B, T).

    Harmless HF kwargs (use_cache, top_k=None, position_ids=None, ...) are accepted; hooks this loop does
    not implement (stopping_criteria, logits_processor, streamer, max_length, ...) raise
    NotImplementedError. eos_token_id / pad_token_id default to model.generation_config (when present),
    then model.config, as transformers does (LLaVA's eval scripts pass no eos); max_new_tokens to 20.
    """
    unsupported = sorted(key for key in kwargs if key in _UNSUPPORTED_KWARGS and kwargs[key] is not None)
    if unsupported:
        raise NotImplementedError(
            f"generate: {unsupported} not supported by the llava_hybrid decode loop (supported: do_sample, "
            "temperature, top_p, num_beams, max_new_tokens, eos_token_id, pad_token_id, attention_mask, "
            "inputs_embeds, generator)")
    if kwargs.get("top_k") not in (None, 0) or kwargs.get("num_return_sequences", 1) not in (None, 1):
        raise NotImplementedError("generate: top_k and num_return_sequences > 1 are not supported")
    use_cache = kwargs.pop("use_cache", True)
    for key in _IGNORED_KWARGS:
        kwargs.pop(key, None)
    if kwargs.pop("position_ids", None) is not None:
        raise NotImplementedError("generate: position_ids are derived from attention_mask; do not pass them")
    defaults = _generation_defaults(model)  # first non-None wins

    def default(name):
        given = kwargs.pop(name, None)
        values = [given] + [getattr(source, name, None) for source in defaults]
        return next((v for v in values if v is not None), None)

    input_ids = kwargs.pop("input_ids", inputs)
    options = dict(
        max_new_tokens=kwargs.pop("max_new_tokens", None) or 20,
        do_sample=bool(kwargs.pop("do_sample", False)),
        temperature=kwargs.pop("temperature", None) or 1.0,
        top_p=kwargs.pop("top_p", None) or 1.0,
        num_beams=kwargs.pop("num_beams", None) or 1,
        eos_token_id=default("eos_token_id"),
        pad_token_id=default("pad_token_id"),
        generator=kwargs.pop("generator", None),
    )
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    attention_mask = kwargs.pop("attention_mask", None)
    if kwargs:
        raise TypeError(f"generate: unexpected keyword arguments {sorted(kwargs)}")
    out = generate_tokens(model, input_ids, inputs_embeds, attention_mask, use_cache=use_cache is not False,
                          **options)
    return out.sequences
