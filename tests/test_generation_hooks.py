"""What LLaVA's interactive and serving paths pass to generate, on the project's decode loop: streamers
(TextStreamer, TextIteratorStreamer in a thread as model_worker runs it), stopping criteria (every step,
per row; LLaVA's KeywordsStoppingCriteria) and beam search with sampling, checked against transformers'
own generate on an equivalent all-attention Phi."""
import threading
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM, TextIteratorStreamer, TextStreamer

from llava_hybrid.hybrid import HybridPhiConfig, HybridPhiForCausalLM, generate_tokens

TEACHER = Path(__file__).resolve().parents[1] / "playground" / "easyvqa" / "teacher"
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            partial_rotary_factor=0.5, rope_theta=10000.0)
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


@pytest.fixture(scope="module")
def tokenizer():
    import llava_hybrid

    llava_hybrid.activate()  # a transformers-5 tokenizer_config loads on 4.x through the tokenizer_backend_name patch
    return AutoTokenizer.from_pretrained(str(TEACHER))  # the shipped teacher's byte-level BPE (440 tokens)


def hybrid(vocab_size, mamba_layers=(0, 2)):
    torch.manual_seed(0)
    model = HybridPhiForCausalLM(HybridPhiConfig(vocab_size=vocab_size, **TINY, mamba_layers=list(mamba_layers)))
    model.config.eos_token_id = None  # a random model: let it run to max_new_tokens unless told otherwise
    return model.eval()


class Recorder(TextStreamer):
    """A TextStreamer that keeps what it would print."""

    def __init__(self, tokenizer, **kw):
        super().__init__(tokenizer, **kw)
        self.chunks = []

    def on_finalized_text(self, text, stream_end=False):
        self.chunks.append(text)


def test_text_streamer_streams_exactly_the_returned_text(tokenizer):
    model = hybrid(len(tokenizer))
    ids = tokenizer("what shape is in the image?", return_tensors="pt").input_ids
    streamer = Recorder(tokenizer, skip_prompt=True, skip_special_tokens=True)
    new = model.generate(ids, max_new_tokens=12, streamer=streamer)
    assert new.shape == (1, 12)
    assert "".join(streamer.chunks) == tokenizer.decode(new[0], skip_special_tokens=True)
    assert len(streamer.chunks) > 1  # streamed as it went, not once at the end
    # without skip_prompt the prompt is streamed first, as transformers does
    with_prompt = Recorder(tokenizer, skip_special_tokens=True)
    model.generate(ids, max_new_tokens=12, streamer=with_prompt)
    assert "".join(with_prompt.chunks) == tokenizer.decode(torch.cat([ids[0], new[0]]), skip_special_tokens=True)


def test_text_iterator_streamer_in_a_thread_as_model_worker_runs_it(tokenizer):
    model = hybrid(len(tokenizer))
    ids = tokenizer("is there a blue circle?", return_tensors="pt").input_ids
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        new=model.generate(inputs=ids, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=10,
                           streamer=streamer, use_cache=True, generator=torch.Generator().manual_seed(3))))
    thread.start()
    streamed = "".join(piece for piece in streamer)
    thread.join(timeout=60)
    assert streamed == tokenizer.decode(result["new"][0], skip_special_tokens=True)


def test_streamer_with_beam_search_is_refused_as_in_transformers(tokenizer):
    model = hybrid(len(tokenizer))
    ids = tokenizer("what color", return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="streamer cannot be used with beam search"):
        model.generate(ids, max_new_tokens=3, num_beams=2, streamer=Recorder(tokenizer))


def test_stopping_criteria_are_checked_every_step_and_per_row():
    model = hybrid(97)
    ids = torch.randint(0, 97, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # row 1 left padded
    free = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=8).sequences
    calls = []

    def at_lengths(sequences, scores):  # stops row 0 after 3 new tokens and row 1 after 5
        calls.append(sequences.shape[1])
        assert scores.shape == (2, 97)
        return torch.tensor([sequences.shape[1] - 6 >= 3, sequences.shape[1] - 6 >= 5])

    out = generate_tokens(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=96,
                          stopping_criteria=[at_lengths]).sequences
    assert calls == [7, 8, 9, 10, 11]  # after every token, with the prompt ids in front
    assert out.shape == (2, 5)  # the loop ends when every row has stopped
    assert out[0].tolist() == free[0, :3].tolist() + [96, 96]
    assert out[1].tolist() == free[1, :5].tolist()
    # a criterion answering one bool for the whole batch (transformers < 4.39, LLaVA's own) stops all rows
    assert model.generate(ids, max_new_tokens=8, stopping_criteria=[lambda s, _: s.shape[1] >= 8]).shape == (2, 2)


def test_llava_keywords_stopping_criteria_stops_at_the_keyword(tokenizer):
    from llava.mm_utils import KeywordsStoppingCriteria

    model = hybrid(len(tokenizer))
    ids = tokenizer("is the triangle red?", return_tensors="pt").input_ids
    free = model.generate(ids, max_new_tokens=16)[0]
    # the first new token after the second that decodes to a word not seen before it: the keyword
    j = next(j for j in range(2, 16) if tokenizer.decode(free[j:j + 1]).strip().isalpha()
             and tokenizer.decode(free[j:j + 1]).strip() not in tokenizer.decode(free[:j]))
    criterion = KeywordsStoppingCriteria([tokenizer.decode(free[j:j + 1]).strip()], tokenizer, ids)
    stopped = model.generate(ids, max_new_tokens=16, stopping_criteria=[criterion])[0]
    assert stopped.tolist() == free[: j + 1].tolist()


def test_a_criterion_finishes_beam_candidates_as_eos_does():
    model = hybrid(97)
    ids = torch.randint(0, 97, (2, 6))
    free = generate_tokens(model, ids, max_new_tokens=6, num_beams=3).sequences
    stop = int(free[0, 2])
    by_eos = generate_tokens(model, ids, max_new_tokens=6, num_beams=3, eos_token_id=stop, pad_token_id=0)
    by_criterion = generate_tokens(model, ids, max_new_tokens=6, num_beams=3, pad_token_id=0,
                                   stopping_criteria=lambda s, _: s[:, -1] == stop)
    assert by_criterion.sequences.tolist() == by_eos.sequences.tolist()
    assert torch.allclose(by_criterion.scores, by_eos.scores)


def _trim_after_eos(row, eos):
    row = row.tolist()
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.skipif(not TRANSFORMERS_5, reason="the loop follows transformers 5's beam search (candidates kept in "
                    "draw order); 4.37's _beam_sample sorts the draws by score before picking hypotheses")
@pytest.mark.parametrize("options", [dict(do_sample=False), dict(do_sample=True, temperature=0.7),
                                     dict(do_sample=True, temperature=1.3, top_p=0.9)])
def test_beam_search_and_beam_sampling_give_transformers_tokens(options):
    """Same weights, same seed: the project's loop and transformers' generate choose the same beams."""
    torch.manual_seed(0)
    ref = PhiForCausalLM(PhiConfig(vocab_size=97, **TINY)).eval()
    ours = HybridPhiForCausalLM(HybridPhiConfig(vocab_size=97, **TINY, mamba_layers=[])).eval()
    ours.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 97, (2, 6))
    eos = 5
    for seed in range(4 if options["do_sample"] else 1):
        torch.manual_seed(seed)  # transformers draws from the global generator; so does the loop by default
        theirs = ref.generate(ids, num_beams=3, max_new_tokens=8, top_k=0, eos_token_id=eos, pad_token_id=0,
                              **options)[:, ids.shape[1]:]
        torch.manual_seed(seed)
        mine = ours.generate(ids, num_beams=3, max_new_tokens=8, eos_token_id=eos, pad_token_id=0, **options)
        for row in range(2):  # transformers pads finished rows with eos when pad_token_id is 0
            assert _trim_after_eos(mine[row], eos) == _trim_after_eos(theirs[row], eos), (seed, row)


def test_beam_sampling_is_reproducible_and_differs_from_beam_search():
    model = hybrid(97)
    ids = torch.randint(0, 97, (2, 6))

    def beam_sample(seed):
        return generate_tokens(model, ids, max_new_tokens=8, num_beams=2, do_sample=True, temperature=1.5,
                               generator=torch.Generator().manual_seed(seed)).sequences

    assert torch.equal(beam_sample(1), beam_sample(1))
    searched = generate_tokens(model, ids, max_new_tokens=8, num_beams=2).sequences
    assert any(not torch.equal(beam_sample(s), searched) for s in range(4))
    # LLaVA's model_vqa* default: temperature 0.2 with num_beams (beam sampling) runs
    assert model.generate(ids, do_sample=True, temperature=0.2, num_beams=2, max_new_tokens=4).shape == (2, 4)
