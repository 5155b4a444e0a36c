"""One decode loop for every model of this project (hybrid or all-attention): prefill once (the Mamba
layers run their chunked scan), then one token per step against a pre-allocated HybridCache.

The step is static (`decode_logits`, the model's `decode_step`): every layer of the whole model for one
token, K/V written in place at the cache's slot tensor, Mamba conv/SSM states updated in place, the
positions advanced in place; no shape and no Python number changes from one token to the next or with
the context length, and no host sync. So it can run as it is (eager), compiled by
`torch.compile(fullgraph=True)` (`compile=True`: one compilation serves every step and context length),
and, on CUDA, captured once per generation as a CUDA graph after two eager warm-up steps and replayed
for every further token (`cuda_graph=True`, as mamba_ssm's `decode(cg=True)` and gpt-fast's
"reduce-overhead"; it captures the compiled step when both are set). Token choice (argmax or a draw)
stays on the device; the loop reads the device only to stop at eos (every token on CPU, where that is
free; every `SYNC_EVERY` tokens on CUDA, trimming the tokens decoded past the stop) or for a streamer or
stopping criteria.

Modes: greedy, sampling (temperature, top_p, a torch.Generator for reproducibility), beam search
(num_beams, length penalty 1: a finished hypothesis scores sum(log p) / its number of new tokens) and
beam sampling (num_beams > 1 with do_sample, transformers' rule: each step's log-probabilities are
divided by the temperature and cut to the nucleus, added to the running beam sums, and the 2K
candidates are drawn without replacement from the softmax over all K x V continuations, then sorted).
Batches may be LEFT padded (attention_mask, 1 = token): positions skip the padding, attention masks it
and the Mamba mixers zero it, so a padded row generates what it would alone. A row stops at its eos or
when a stopping criterion says so (checked after every token, per row) and emits pad afterwards.
A streamer (transformers' TextStreamer / TextIteratorStreamer protocol: put(prompt), put(token) per
step, end()) sees the tokens as they are chosen. Returns only the new tokens (B, T), T <= max_new_tokens.

The model must provide `next_token_logits(input_ids=, inputs_embeds=, attention_mask=, position_ids=,
cache=) -> (B, V)` (the prefill), `decode_step(tokens, positions, cache) -> (B, V)`, `allocate_cache(batch,
max_length)` and `get_input_embeddings()` (HybridCausalLMBase).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import positions_from_mask

_IGNORED_KWARGS = {"use_cache", "output_attentions", "output_hidden_states", "return_dict_in_generate",
                   "synced_gpus", "repetition_penalty", "top_k", "length_penalty", "early_stopping",
                   "min_new_tokens", "num_return_sequences", "image_sizes", "modalities"}
_UNSUPPORTED_KWARGS = {"logits_processor", "prefix_allowed_tokens_fn", "constraints", "force_words_ids",
                       "assistant_model", "max_length"}


SYNC_EVERY = 8  # CUDA: tokens between two reads of the "every row done" flag (a host sync)
CUDA_GRAPH_WARMUP = 2  # eager steps (on a side stream) before the CUDA graph is captured


def decode_logits(model, cache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The static decode step: tokens (B,) at positions (B, 1) -> next logits (B, V) fp32; the cache's
    slot and `positions` move on by one, in place."""
    logits = model.decode_step(tokens, positions, cache).float()  # (B, V)
    positions.add_(1)
    return logits


_COMPILED: dict = {}


def compiled_decode_logits(backend="inductor"):
    """decode_logits under torch.compile(fullgraph=True) with `backend` (a name or a dynamo backend
    callable); one wrapper per backend (dynamo keeps the compiled graphs, guarded, on the function)."""
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(decode_logits, fullgraph=True, backend=backend)
    return _COMPILED[backend]


def _mark_cache_length_dynamic(cache) -> None:
    """One compiled graph for every context length: the cache's length axis is symbolic for dynamo."""
    torch._dynamo.maybe_mark_dynamic(cache.key_mask, 1)
    for key_cache, value_cache in cache.kv.values():
        torch._dynamo.maybe_mark_dynamic(key_cache, 2)
        torch._dynamo.maybe_mark_dynamic(value_cache, 2)


class _StaticStep:
    """`decode_logits` on one cache: eager, compiled, or replayed from a CUDA graph (module docstring).

    The CUDA graph reads the tokens from its own input buffer and returns the same output buffer at every
    replay (valid until the next step)."""

    def __init__(self, model, cache, compile=False, cuda_graph=False):
        self.model, self.cache = model, cache
        self.fn = decode_logits
        if compile:
            _mark_cache_length_dynamic(cache)
            self.fn = compiled_decode_logits("inductor" if compile is True else compile)
        if cuda_graph and cache.key_mask.device.type != "cuda":
            raise ValueError(f"generate: cuda_graph=True needs the model on CUDA, got {cache.key_mask.device}")
        self.cuda_graph, self.eager_steps = cuda_graph, 0
        self.graph = self.tokens_in = self.logits_out = None

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graph:
            return self.fn(self.model, self.cache, tokens, positions)
        if self.graph is None and self.eager_steps < CUDA_GRAPH_WARMUP:
            self.eager_steps += 1  # real steps, on a side stream (lazy inits, Triton JIT, allocator warm-up)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                logits = self.fn(self.model, self.cache, tokens, positions)
            torch.cuda.current_stream().wait_stream(side)
            return logits
        if self.graph is None:  # capture records the step; it does not run it
            self.tokens_in = tokens.clone()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits_out = self.fn(self.model, self.cache, self.tokens_in, positions)
        self.tokens_in.copy_(tokens)
        self.graph.replay()
        return self.logits_out


@dataclass
class GenerationOutput:
    """sequences: (B, T) new tokens; scores: (B,) beam score of each returned sequence (beam search), else None."""

    sequences: torch.Tensor
    scores: torch.Tensor | None = None


class _Stepper:
    """Runs the model on the prompt (prefill) and then on one token at a time, keeping mask, positions
    and cache (or, without a cache, the whole sequence so far) for a batch of rows."""

    def __init__(self, model, input_ids, inputs_embeds, attention_mask, max_new_tokens, use_cache,
                 compile=False, cuda_graph=False):
        self.model, self.use_cache = model, use_cache
        self.compile, self.cuda_graph = compile, cuda_graph
        self.decode = self.next_positions = None
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
        """Logits after the prompt: (B, V); with a cache, the static decode step takes over from here."""
        logits = self._run(self.embeds, self.positions)
        if self.use_cache:
            self.cache.start_decode(self.mask if self.padded else None)
            self.next_positions = self.positions[:, -1:] + 1  # (B, 1), advanced in place by each step
            self.decode = _StaticStep(self.model, self.cache, self.compile, self.cuda_graph)
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens (B,) and return the next logits (B, V)."""
        if self.use_cache:
            return self.decode(tokens, self.next_positions)
        new_embeds = self.model.get_input_embeddings()(tokens[:, None]).to(self.embeds.dtype)  # (B, 1, D)
        new_pos = self.positions[:, -1:] + 1  # (B, 1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.positions = torch.cat([self.positions, new_pos], dim=1)
        self.embeds = torch.cat([self.embeds, new_embeds], dim=1)
        return self._run(self.embeds, self.positions)

    def reorder(self, rows: torch.Tensor) -> None:
        """Rows i <- rows[i] (beam search); the static step's buffers in place (a CUDA graph reads them)."""
        if self.cache is not None:
            self.cache.reorder(rows)
            self.next_positions.copy_(self.next_positions[rows])
        else:
            self.mask, self.positions, self.embeds = self.mask[rows], self.positions[rows], self.embeds[rows]

    def finish(self) -> None:
        """The cache leaves its static decode (its length counts the decoded tokens)."""
        if self.cache is not None:
            self.cache.finish_decode()


@dataclass
class _Sampling:
    """How the next token is chosen: argmax, or a draw after temperature and nucleus (top_p)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    min_keep: int = 1  # tokens the nucleus always keeps (beam sampling keeps n_eos + 1, as transformers)

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """scores (N, V) / temperature, -inf outside the nucleus (transformers' Temperature + TopP warpers)."""
        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        sorted_scores, order = scores.sort(dim=-1)  # ascending
        remove = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= 1 - self.top_p  # (N, V)
        remove[:, -self.min_keep :] = False
        return scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """Next token per row from logits (B, V) -> (B,)."""
        if not self.do_sample:
            return logits.argmax(dim=-1)
        probs = F.softmax(self.warp(logits), dim=-1)  # (B, V)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


def _criteria_hit(criteria, sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """OR of the stopping criteria on sequences (N, L) -> (N,) bool. A criterion may answer with one bool
    for all rows (LLaVA's KeywordsStoppingCriteria, transformers < 4.39) or a (N,) tensor."""
    hit = torch.zeros(sequences.shape[0], dtype=torch.bool, device=sequences.device)
    for criterion in criteria:
        answer = criterion(sequences, scores)
        hit = hit | torch.as_tensor(answer, device=sequences.device).bool().expand(sequences.shape[0])
    return hit


def _greedy_or_sample(stepper, sampling, prompt_ids, max_new_tokens, eos_ids, pad_id, criteria, streamer,
                      on_token=None):
    logits = stepper.prefill()
    b = logits.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    all_done_at = torch.full((), max_new_tokens, dtype=torch.long, device=logits.device)  # first t with every row done
    # how often the host reads `done`: every token where that is free (CPU) or needed (hooks), else in strides
    every = 1 if logits.device.type == "cpu" or criteria or streamer is not None else SYNC_EVERY
    out = []
    if streamer is not None:
        streamer.put(prompt_ids.cpu())  # the prompt first: skip_prompt streamers drop exactly this
    for t in range(max_new_tokens):
        token = sampling.pick(logits)  # (B,)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        out.append(token)
        if on_token is not None:
            on_token(t)
        if streamer is not None:
            streamer.put(token.cpu())
        if eos_ids is not None:
            done |= torch.isin(token, eos_ids)
        if criteria:
            done |= _criteria_hit(criteria, torch.cat([prompt_ids, torch.stack(out, dim=1)], dim=1), logits)
        if eos_ids is not None or criteria:
            all_done_at = torch.where(done.all() & (all_done_at == max_new_tokens), t, all_done_at)
            if (t + 1) % every == 0 and bool(done.all()):
                break
        if t + 1 < max_new_tokens:
            logits = stepper.step(token)
    stepper.finish()
    if streamer is not None:
        streamer.end()
    if not out:
        return GenerationOutput(logits.new_zeros(b, 0, dtype=torch.long))
    tokens = torch.stack(out, dim=1)  # (B, T'): with strided reads, tokens past the stop are cut off
    return GenerationOutput(tokens[:, : int(all_done_at) + 1] if eos_ids is not None or criteria else tokens)


def _candidates(cand: torch.Tensor, n: int, sampling: _Sampling):
    """The n best (beam search) or n drawn (beam sampling) of the running sums cand (B, K*V), best first."""
    if not sampling.do_sample:
        return cand.topk(n, dim=-1)
    probs = F.softmax(cand, dim=-1)  # (B, K*V)
    n = min(n, int((probs > 0).sum(dim=-1).min()))  # a draw without replacement needs n non-zero entries
    idx = torch.multinomial(probs, n, generator=sampling.generator)  # (B, n), in draw order
    return cand.gather(-1, idx), idx


def _beam_step_scores(logits: torch.Tensor, sampling: _Sampling) -> torch.Tensor:
    """The per-step beam scores (N, V): log p, warped (temperature, nucleus) when sampling."""
    logp = F.log_softmax(logits, dim=-1)
    return sampling.warp(logp) if sampling.do_sample else logp


def _beam_search(stepper, sampling, prompt_ids, batch, num_beams, max_new_tokens, eos_ids, pad_id, criteria):
    """Beam search over `batch` prompts, each repeated num_beams times in the stepper (rows b*K + k).

    Each step takes 2K candidates per prompt (the best, or drawn when sampling, in draw order: what
    transformers 5's beam search does). Alive beams keep the num_beams best-scoring candidates (running
    sums of log p, warped when sampling); a candidate ending in eos or meeting a stopping criterion, and at
    the last step every candidate, becomes a finished hypothesis (scored sum / length) when it is among the
    first num_beams candidates. A prompt is done when it has num_beams hypotheses and none of its alive
    beams can still beat the worst (transformers' rule for length penalty 1: best running sum / current
    length).
    """
    k = num_beams
    eos = set(eos_ids.tolist()) if eos_ids is not None else set()
    n_cand = max(2, 1 + len(eos)) * k
    logp = _beam_step_scores(stepper.prefill(), sampling)  # (B*K, V)
    vocab, device = logp.shape[-1], logp.device
    running = torch.full((batch, k), float("-inf"), device=device)
    running[:, 0] = 0.0  # all beams start equal: expand only the first one at step 0
    tokens = torch.zeros(batch, k, 0, dtype=torch.long, device=device)  # (B, K, t)
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max_new_tokens):
        # 1. the n_cand best (or drawn) continuations of each prompt's beams: (B, K*V) -> (B, n_cand)
        cand = (running[:, :, None] + logp.view(batch, k, vocab)).view(batch, k * vocab)
        top_scores, top_idx = _candidates(cand, n_cand, sampling)
        stops = set()
        if criteria:  # candidates whose sequence (prompt + tokens + candidate) meets a criterion
            beam_of, tok_of = top_idx // vocab, top_idx % vocab  # (B, n)
            n = top_idx.shape[1]
            grown = torch.cat([tokens.gather(1, beam_of[..., None].expand(-1, -1, tokens.shape[-1])),
                               tok_of[..., None]], dim=-1)  # (B, n, t+1)
            seqs = torch.cat([prompt_ids[:, None].expand(-1, n, -1), grown], dim=-1).flatten(0, 1)  # (B*n, P+t+1)
            step_scores = logp.view(batch, k, vocab).gather(1, beam_of[..., None].expand(-1, -1, vocab))
            hit = _criteria_hit(criteria, seqs, step_scores.flatten(0, 1)).view(batch, n)  # (B, n)
            stops = {(b, r) for b, r in hit.nonzero().tolist()}
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        last = t + 1 == max_new_tokens  # the length limit finishes every candidate, as a stopping criterion
        # 2. finishing candidates become hypotheses, the others fill the K new beams
        new_running = torch.full((batch, k), float("-inf"), device=device)
        parent = torch.zeros(batch, k, dtype=torch.long, device=device)
        new_tok = torch.full((batch, k), pad_id, dtype=torch.long, device=device)
        for b in range(batch):
            if done[b]:
                continue
            alive = []
            for rank, (score, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                beam, tok = divmod(idx, vocab)
                if last or tok in eos or (b, rank) in stops:
                    if rank < k:
                        hypothesis = torch.cat([tokens[b, beam], tokens.new_tensor([tok])])  # (t+1,)
                        finished[b].append((score / (t + 1), hypothesis))
                    continue
                alive.append((score, beam, tok))
            for j, (score, beam, tok) in enumerate(sorted(alive, key=lambda c: -c[0])[:k]):
                new_running[b, j], parent[b, j], new_tok[b, j] = score, beam, tok
            # 3. keep the K best hypotheses; done when no alive beam can beat the worst of them
            finished[b] = sorted(finished[b], key=lambda h: -h[0])[:k]
            best_alive = new_running[b].max().item() / (t + 1)
            done[b] = done[b] or (len(finished[b]) == k and finished[b][-1][0] >= best_alive)
        # 4. move beams to their parents' rows and append the new tokens
        rows = (torch.arange(batch, device=device)[:, None] * k + parent).view(-1)  # (B*K,)
        tokens = torch.cat([tokens.view(batch * k, -1)[rows].view(batch, k, -1), new_tok[:, :, None]], dim=-1)
        running = new_running
        if all(done) or last:
            break
        stepper.reorder(rows)
        logp = _beam_step_scores(stepper.step(new_tok.view(-1)), sampling)
    stepper.finish()
    # 5. each prompt's best hypothesis
    best = [max(hyps, key=lambda h: h[0]) for hyps in finished]
    sequences = torch.full((batch, max(len(seq) for _, seq in best)), pad_id, dtype=torch.long, device=device)
    for b, (_, seq) in enumerate(best):
        sequences[b, : len(seq)] = seq
    return GenerationOutput(sequences, torch.tensor([score for score, _ in best], device=device))


def _as_criteria(stopping_criteria) -> list:
    """None, one callable, or a list of them (transformers' StoppingCriteriaList is a list) -> a list."""
    if stopping_criteria is None:
        return []
    if callable(stopping_criteria) and not isinstance(stopping_criteria, (list, tuple)):
        return [stopping_criteria]
    criteria = list(stopping_criteria)
    for criterion in criteria:
        if not callable(criterion):
            raise TypeError(f"generate: stopping_criteria must be callables (ids, scores) -> bool, got {criterion!r}")
    return criteria


@torch.no_grad()
def generate_tokens(model, input_ids=None, inputs_embeds=None, attention_mask=None, *, max_new_tokens=16,
                    do_sample=False, temperature=1.0, top_p=1.0, num_beams=1, eos_token_id=None,
                    pad_token_id=None, use_cache=True, generator=None, stopping_criteria=None,
                    streamer=None, compile=False, cuda_graph=False, on_token=None) -> GenerationOutput:
    """Generate up to max_new_tokens new tokens per row; see the module docstring.

    input_ids (B, P) or inputs_embeds (B, P, D); attention_mask (B, P) with left padding; eos_token_id
    an int or a list; pad_token_id defaults to the (first) eos, else 0. use_cache=False recomputes the
    whole sequence each step (a reference for tests). stopping_criteria: callables (ids, scores) -> bool
    or (N,) bool, called after every token with the prompt ids (none when the prompt came as embeddings,
    as transformers) followed by the new tokens, and the step's scores. streamer: put()/end() as
    transformers' streamers (greedy and sampling only, as transformers). compile: run the static decode
    step under torch.compile(fullgraph=True) (True: inductor; or a dynamo backend name / callable);
    cuda_graph: replay it from a CUDA graph (CUDA only). Both need use_cache. on_token(t): called once
    token t (0-based) of every row is chosen, without reading the device (greedy and sampling; the
    benchmark's clock). Returns
    GenerationOutput(sequences (B, T), scores).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("generate: pass exactly one of input_ids or inputs_embeds")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_beams < 1:
        raise ValueError(f"generate: num_beams must be >= 1, got {num_beams}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(
            f"generate: do_sample needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}"
        )
    if (compile or cuda_graph) and not use_cache:
        raise ValueError("generate: compile / cuda_graph run the cached static decode step; use_cache=False "
                         "recomputes the whole sequence instead")
    if streamer is not None and num_beams > 1:
        raise ValueError("generate: a streamer cannot be used with beam search (as in transformers); "
                         "set num_beams=1")
    criteria = _as_criteria(stopping_criteria)
    prompt = input_ids if input_ids is not None else inputs_embeds
    batch, device = prompt.shape[0], prompt.device
    # what stopping criteria and streamers see before the new tokens: the prompt ids, or nothing
    prompt_ids = input_ids if input_ids is not None else torch.zeros(batch, 0, dtype=torch.long, device=device)
    if isinstance(eos_token_id, int):
        eos_token_id = [eos_token_id]
    eos_ids = torch.tensor(list(eos_token_id), device=device) if eos_token_id else None
    if pad_token_id is None:
        pad_token_id = int(eos_ids[0]) if eos_ids is not None else 0
    n_eos = 0 if eos_ids is None else len(eos_ids)
    min_keep = max(2, n_eos + 1) if num_beams > 1 else 1  # transformers' nucleus floor for beam methods
    sampling = _Sampling(do_sample, temperature, top_p, generator, min_keep)

    if num_beams > 1:
        expand = lambda x: None if x is None else x.repeat_interleave(num_beams, dim=0)  # noqa: E731
        stepper = _Stepper(model, expand(input_ids), expand(inputs_embeds), expand(attention_mask),
                           max_new_tokens, use_cache, compile, cuda_graph)
        return _beam_search(stepper, sampling, prompt_ids, batch, num_beams, max_new_tokens, eos_ids,
                            pad_token_id, criteria)
    stepper = _Stepper(model, input_ids, inputs_embeds, attention_mask, max_new_tokens, use_cache, compile,
                       cuda_graph)
    return _greedy_or_sample(stepper, sampling, prompt_ids, max_new_tokens, eos_ids, pad_token_id, criteria,
                             streamer, on_token)


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

    Harmless HF kwargs (use_cache, top_k=None, position_ids=None, ...) are accepted, and so are
    `stopping_criteria` and `streamer` (what llava.serve.cli and model_worker pass); hooks this loop does
    not implement (logits_processor, constraints, max_length, ...) raise NotImplementedError.
    eos_token_id / pad_token_id default to model.generation_config (when present), then model.config, as
    transformers does (LLaVA's eval scripts pass no eos); max_new_tokens to 20. The project's engine
    options `compile` and `cuda_graph` (see generate_tokens) are accepted too.
    """
    unsupported = sorted(key for key in kwargs if key in _UNSUPPORTED_KWARGS and kwargs[key] is not None)
    if unsupported:
        raise NotImplementedError(
            f"generate: {unsupported} not supported by the llava_hybrid decode loop (supported: do_sample, "
            "temperature, top_p, num_beams, max_new_tokens, eos_token_id, pad_token_id, attention_mask, "
            "inputs_embeds, generator, stopping_criteria, streamer, compile, cuda_graph)")
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
        stopping_criteria=kwargs.pop("stopping_criteria", None),
        streamer=kwargs.pop("streamer", None),
        compile=kwargs.pop("compile", False),
        cuda_graph=kwargs.pop("cuda_graph", False),
    )
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    attention_mask = kwargs.pop("attention_mask", None)
    if kwargs:
        raise TypeError(f"generate: unexpected keyword arguments {sorted(kwargs)}")
    out = generate_tokens(model, input_ids, inputs_embeds, attention_mask, use_cache=use_cache is not False,
                          **options)
    return out.sequences
