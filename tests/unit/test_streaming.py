"""The strategies' `on_commit` listener: what it streams is exactly the result, with kinds that add up."""
import io

import pytest

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine.engine import Engine
from layerbench.runs.stream_printer import StreamPrinter
from layerbench.surgery.layers import make_identity_layers
from tests.helpers import greedy, prompt_ids, tiny_llama


def _stream(engine, max_steps, exit_layer=-1, d=0, stop=None, sample=False):
    events = []
    strategy = STRATEGIES["self_speculative" if d else "autoregressive"]
    result = strategy.generate(engine, prompt_ids(), GenerationConfig(max_steps, exit_layer, d),
                               TokenChooser(SamplingConfig(sample=sample)), stop or StopCondition(),
                               on_commit=lambda kind, tokens: events.append((kind, list(tokens))))
    streamed = [t for kind, tokens in events if kind != "rejected" for t in tokens]
    count = {kind: sum(len(t) for k, t in events if k == kind) for kind in ("accepted", "rejected", "verified")}
    return result, events, streamed, count


def test_autoregressive_streams_every_token_as_verified():
    result, events, streamed, count = _stream(Engine(tiny_llama()), 12)
    assert streamed == result.token_ids and len(events) == 12
    assert count == {"accepted": 0, "rejected": 0, "verified": 12}


@pytest.mark.parametrize("exit_layer, d, max_steps", [(2, 4, 30), (3, 3, 31), (1, 6, 17)])
@pytest.mark.parametrize("sample", [False, True])
def test_self_speculative_stream_equals_result_and_kinds_add_up(exit_layer, d, max_steps, sample):
    result, events, streamed, count = _stream(Engine(tiny_llama()), max_steps, exit_layer, d, sample=sample)
    assert streamed == result.token_ids and len(streamed) == max_steps
    assert count["accepted"] == result.num_accepted
    assert count["rejected"] == result.num_drafted - result.num_accepted
    assert sample or count["rejected"] > 0  # greedy on this random model rejects; sampling its flat output may not
    assert count["verified"] == max_steps - result.num_accepted
    for i, (kind, tokens) in enumerate(events):  # a rejection is always followed by its correction
        assert tokens and (kind != "rejected" or events[i + 1][0] == "verified")


def test_all_drafts_accepted_stream_only_accepted_and_bonus_tokens():
    model = tiny_llama(num_layers=6)
    make_identity_layers(model, range(3, 6))  # the draft is the full model
    result, events, streamed, count = _stream(Engine(model), 11, 3, 4)
    # first token, then rounds of 4 accepted + 1 bonus: 1 + 5 + 5 = 11
    assert [(k, len(t)) for k, t in events] == [("verified", 1), ("accepted", 4), ("verified", 1),
                                                ("accepted", 4), ("verified", 1)]
    assert streamed == result.token_ids == greedy(model, prompt_ids(), 11).token_ids


def test_stream_stops_where_the_result_stops():
    model = tiny_llama(num_layers=6)
    make_identity_layers(model, range(3, 6))
    engine = Engine(model)
    free = greedy(engine, prompt_ids(), 30).token_ids
    stop = StopCondition({free[2]})  # accepted mid-round: the round's later drafts and bonus are not streamed
    result, events, streamed, count = _stream(engine, 30, 3, 4, stop=stop)
    assert streamed == result.token_ids == free[:free.index(free[2]) + 1]
    # max_steps cuts a full round's bonus token: 1 + 5 + 4 accepted, the bonus dropped
    result, events, streamed, count = _stream(engine, 10, 3, 4)
    assert streamed == result.token_ids and len(streamed) == 10 and events[-1] == ("accepted", free[6:10])


class _LetterTokenizer:
    """Token i decodes to the i-th lowercase letter; token 99 is half of a multi-byte character until 100 follows."""

    def decode(self, ids, skip_special_tokens=True):
        text = "".join("\ufffd" if i == 99 else chr(ord("a") + i) for i in ids if i != 100)
        return text.replace("\ufffd", "é") if 100 in ids else text


def _print(colour):
    out = io.StringIO()
    printer = StreamPrinter(_LetterTokenizer(), out, colour)
    for kind, tokens in [("verified", [0]), ("accepted", [1, 2]), ("rejected", [7, 8]), ("verified", [3]),
                         ("accepted", [99]), ("verified", [100])]:
        printer(kind, tokens)
    return out.getvalue(), printer


def test_printer_writes_plain_text_when_not_colouring():
    text, printer = _print(colour=False)
    assert text == "abcdé" and printer.tokens == [0, 1, 2, 3, 99, 100] and printer.rejected == 2


def test_printer_colours_accepted_drafts_and_corrections():
    text, _ = _print(colour=True)
    green, red, reset = "\033[32m", "\033[31m", "\033[0m"
    # the half character is held back: the accepted token prints nothing, its completion prints as verified
    assert text == f"a{green}bc{reset}{red}d{reset}é"
