"""LayerSkip self-speculative decoding.

Each round drafts up to d tokens with blocks [0, E) + final norm + LM head (through the exit adapter and the
trimmed draft head when they are fitted), then verifies them in ONE pass of blocks [E, L) over the exit-layer
hidden states the draft already computed: blocks below E never run twice for a token. Greedy: accept the longest agreeing prefix; sampling:
speculative rejection sampling. The cache needs no crop: positions after the accepted ones are overwritten by
the next round before anything reads them.

A round that drafted all d tokens runs the last draft through blocks [0, E) too, so verification also yields the
full model's next token after it (the bonus token, as in LayerSkip). A round that stopped early (a stop token, or
with a draft confidence c a draft whose probability fell below c, as Kangaroo does) skips that pass: its last
draft is still checked by the verification row before it, and when every draft is accepted the next round simply
starts from the last one. Either way every committed token is one the full model chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from layerbench.decoding.strategy import CommitListener, GenerationConfig, GenerationResult, GenerationStrategy
from layerbench.engine.phases import DECODE, VERIFY
from layerbench.errors import UsageError
from layerbench.flags import option
from layerbench.lazy import lazy

if TYPE_CHECKING:
    from layerbench.decoding.base import TokenBuffer
    from layerbench.decoding.sampling import StopCondition, TokenChooser
    from layerbench.engine.engine import Engine
    from layerbench.engine.kv_cache import KVCache
    from layerbench.surgery.prune_model import PruneModel

torch = lazy("torch")
base = lazy("layerbench.decoding.base")
NUM_SPECULATIONS_HELP = "tokens drafted per round (-1: none)"


@dataclass
class SelfSpeculativeOptions:
    num_speculations: int = option(-1, NUM_SPECULATIONS_HELP)
    draft_confidence: Optional[float] = option(None, "stop drafting once a draft token's probability is below "
                                                     "this, in (0, 1)")
    draft_vocabulary: Optional[int] = option(None, "drafts score only the N tokens most frequent in the "
                                                   "calibration text (plus stop tokens); verification scores all")


class SelfSpeculative(GenerationStrategy):
    name = "self_speculative"
    summary = "LayerSkip: draft d tokens with blocks [0, E) (--exit_layer E), verify them with the rest in one pass"
    short = "SS"
    options = SelfSpeculativeOptions
    speculative = True

    def validate(self, flags: Any) -> None:
        if flags.exit_layer <= 0:
            raise UsageError(f"--exit_layer must be > 0 for {self.name} (draft layers [0, E))")
        if flags.num_speculations <= 0:
            raise UsageError(f"--num_speculations must be > 0 for {self.name}")
        if flags.draft_confidence is not None and not 0 < flags.draft_confidence < 1:
            raise UsageError(f"--draft_confidence must be in (0, 1), got {flags.draft_confidence}")
        if flags.draft_vocabulary is not None and flags.draft_vocabulary < 1:
            raise UsageError(f"--draft_vocabulary must be >= 1, got {flags.draft_vocabulary}")

    def check_depth(self, flags: Any, num_layers: int) -> None:
        if not 0 < flags.exit_layer < num_layers:
            raise UsageError(f"--exit_layer must satisfy 0 < E < {num_layers} (model layers) for {self.name}, "
                             f"got {flags.exit_layer}")

    def mode(self, exit_layer: int) -> str:
        return self.name

    def configure(self, flags: Any, pruner: PruneModel, engine: Engine, exit_block: int) -> GenerationConfig:
        if exit_block >= pruner.num_blocks:
            raise UsageError(f"--exit_layer {flags.exit_layer}: every layer from it on was pruned, so the draft "
                             f"would be the whole {pruner.num_decoder_layers}-layer model")
        return super().configure(flags, pruner, engine, exit_block)

    def static_shapes(self, engine: Engine, config: GenerationConfig) -> list[tuple[int, int, int, bool]]:
        E, L = config.exit_block, engine.num_blocks
        # verification covers 1 .. d drafted tokens, plus the bonus row after a full round
        return [(0, E, 1, True)] + [(E, L, rows, False) for rows in range(1, config.num_speculations + 2)]

    def generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                 stop: StopCondition, on_commit: CommitListener | None = None) -> GenerationResult:
        with torch.inference_mode():
            return self._generate(engine, prompt, config, chooser, stop, on_commit)

    def _generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                  stop: StopCondition, on_commit: CommitListener | None) -> GenerationResult:
        d = config.num_speculations
        clock = base.Clock(engine.devices)
        t0 = clock.now()
        cache, tokens, token = base.prefill(engine, prompt, self.capacity(prompt.shape[1], config), engine.num_blocks,
                                       chooser)
        ttft = clock.now() - t0
        generated = [token]
        if on_commit is not None:
            on_commit("verified", [token])
        drafted = accepted = rounds = 0
        checked = 0  # generated[:checked] holds no stop token
        while len(generated) < config.max_steps and stop.first_stop(generated, checked) is None:
            checked = len(generated)
            k = min(d, config.max_steps - len(generated))
            new, drafts, num_accepted = self._round(engine, cache, tokens, token, k, config, chooser, stop)
            drafted += len(drafts)
            accepted += num_accepted
            rounds += 1
            tokens.commit(new)
            generated.extend(new)
            token = new[-1]
            if on_commit is not None:
                stream_round(on_commit, drafts, new, num_accepted, base.kept_count(generated, checked, config.max_steps,
                                                                              stop))
        out, stopped = base.finish(generated, config.max_steps, stop)
        return GenerationResult(out, ttft, clock.now() - t0, drafted, accepted, rounds, stopped)

    def _round(self, engine: Engine, cache: KVCache, tokens: TokenBuffer, token: int, k: int,
               config: GenerationConfig, chooser: TokenChooser, stop: StopCondition) -> tuple[list[int], int, int]:
        """One draft/verify round starting from `token` (committed, not yet processed by any block).
        Returns the tokens to commit, the drafted tokens and the number of drafts accepted."""
        E, pos = config.exit_block, tokens.n - 1
        drafts, draft_probs, exit_hidden = self._draft(engine, cache, tokens, token, k, config, chooser, stop)
        bonus = len(drafts) == k and drafts[-1] not in stop.stop_token_ids
        if bonus:
            exit_hidden.append(engine.run(cache, pos + len(drafts), 0, E,
                                          input_ids=base.token_tensor(drafts[-1], engine.device), phase=DECODE))
        hidden = engine.run(cache, pos, E, engine.num_blocks, hidden=torch.cat(exit_hidden, dim=1), phase=VERIFY)
        logits = engine.logits(hidden, step=True)[0]  # row i predicts the token after input i (inputs: token, drafts...)
        new, num_accepted = accept(chooser, tokens, drafts, draft_probs, logits)
        return new, drafts, num_accepted

    def _draft(self, engine: Engine, cache: KVCache, tokens: TokenBuffer, token: int, k: int,
               config: GenerationConfig, chooser: TokenChooser, stop: StopCondition):
        pos = tokens.n - 1
        drafts: list[int] = []
        draft_probs: list[torch.Tensor | None] = []
        exit_hidden: list[torch.Tensor] = []
        current = token
        for i in range(k):
            h, logits = self._draft_step(engine, cache, pos + i, current, config)
            exit_hidden.append(h)
            current, q = chooser.pick(tokens.prefix(drafts) if chooser.needs_prefix else None, logits)
            drafts.append(current)
            draft_probs.append(q)
            if current in stop.stop_token_ids:
                break
            if config.draft_confidence is not None and i + 1 < k and \
                    draft_probability(chooser, tokens, drafts, logits, q) < config.draft_confidence:
                break
        return drafts, draft_probs, exit_hidden

    @staticmethod
    def _draft_step(engine: Engine, cache: KVCache, pos: int, token: int, config: GenerationConfig):
        """One draft token at `pos`: (the hidden state entering block E, which verification starts from; the
        draft's logits)."""
        E = config.exit_block
        h = engine.run(cache, pos, 0, E, input_ids=base.token_tensor(token, engine.device), phase=DECODE)
        return h, engine.draft_logits(h[:, -1], E, step=True)[0]


def stream_round(on_commit: CommitListener, drafts: list[int], new: list[int], num_accepted: int, kept: int) -> None:
    """Report one round's first `kept` committed tokens: the accepted drafts, then (when kept) the rejected
    drafts and the full model's token after them."""
    if kept and num_accepted:
        on_commit("accepted", new[:min(num_accepted, kept)])
    if kept > num_accepted:
        if num_accepted < len(drafts):
            on_commit("rejected", drafts[num_accepted:])
        on_commit("verified", new[num_accepted:kept])


def draft_probability(chooser: TokenChooser, tokens: TokenBuffer, drafts: list[int], logits: torch.Tensor,
                      q: torch.Tensor | None) -> float:
    """Probability the drafting distribution gave the last draft token."""
    if q is None:
        q = chooser.probs(tokens.prefix(drafts[:-1]) if chooser.needs_prefix else None, logits)
    return float(q[drafts[-1]])


def accept(chooser: TokenChooser, tokens: TokenBuffer, drafts: list[int], draft_probs: list[torch.Tensor | None],
           logits: torch.Tensor) -> tuple[list[int], int]:
    """(tokens to commit, drafts accepted): the accepted drafts followed by one token from the full model, the
    correction of the first rejected draft, or after all of them the bonus token when `logits` has a row for it
    (k + 1 rows)."""
    k = len(drafts)
    if not chooser.sample:
        if chooser.needs_prefix:
            verify = [int(torch.argmax(chooser.scores(tokens.prefix(drafts[:i]), logits[i])))
                      for i in range(logits.shape[0])]
        else:
            verify = logits.argmax(dim=-1).tolist()
        n = 0
        while n < k and verify[n] == drafts[n]:
            n += 1
        return drafts[:n] + verify[n:n + 1], n
    for i in range(k):
        p = chooser.probs(tokens.prefix(drafts[:i]), logits[i])
        q = draft_probs[i]
        t = drafts[i]
        if chooser.uniform() * float(q[t]) < float(p[t]):  # accept with probability min(1, p/q)
            continue
        residual = torch.clamp(p - q, min=0)
        total = residual.sum()
        return drafts[:i] + [chooser.draw(residual / total) if total > 0 else chooser.draw(p)], i
    if logits.shape[0] == k:  # no bonus row
        return drafts, k
    return drafts + [chooser.draw(chooser.probs(tokens.prefix(drafts), logits[k]))], k


STRATEGY = SelfSpeculative()
