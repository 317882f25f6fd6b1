"""Shared-prefix prompts: inference-perf's ``shared_prefix`` data generator, as lengths and
prefix-block hashes.

What inference-perf does, read at kubernetes-sigs/inference-perf@3b6f82a03d75212b06c5e0bdef7710b04c033300
(Nov 2025, the version whose config fields match the blis-training runs' ``results/config.yaml``),
``inference_perf/datagen/shared_prefix_datagen.py``:

- ``_generate_prompts``: for each of ``num_groups`` groups, one system prompt of
  ``system_prompt_len`` random token ids; for each of ``num_prompts_per_group`` prompts in the
  group, a question of ``question_len`` random token ids; the prompt is system + " " + question.
  The ``num_groups x num_prompts_per_group`` prompts are then shuffled (``random.shuffle``).
- ``get_request(n)``: request ``n`` sends ``prompts[n % len(prompts)]`` with ``max_tokens =
  output_len``: the requests cycle through the shuffled prompts in a fixed order, so a prompt
  repeats, whole, every ``num_groups x num_prompts_per_group`` requests.
  ``loadgen/load_generator.py`` ``run_stage`` numbers the requests ``0..int(rate x duration)-1``
  in every stage, so each stage starts the cycle again from the first prompt.

Multi-turn chat (``enable_multi_turn_chat``, added in #257, Nov 2025; read at v0.4.0,
e3e690b, ``datagen/shared_prefix_datagen.py`` and ``apis/user_session.py``): each prompt is a
user session whose context starts as its group's system prompt; request ``i`` goes to session
``i % sessions`` (sessions shuffled) with that session's question, and sends ``context + " " +
question``; when the answer arrives the context becomes that prompt + " " + answer. Turn ``r`` of
a session therefore sends system + (r + 1) questions + the r earlier answers. inference-perf
holds a session's next turn until the previous one has answered; here a turn is sent at its
arrival time (the difference matters only when a session's turns arrive closer together than a
request's latency).

inference-perf builds text from random token ids and the server re-tokenises it, so the real
prompts run a few per cent longer than system + question (the blis-training runs measured 591.6
tokens for 100 + 466); this module uses the configured lengths.

Hashes: a prompt is the start of its session's token stream (system prompt, question, answer,
question, ...), so block ``i`` of any turn names the same tokens: its id depends on the group
alone while the block lies inside the system prompt, else on the session, and on ``i`` (and a
last, partial block on its length too). Equal ids are equal KV; the prefix cache
(serving/prefix_cache.py) hits on a group's system prompt, on a prompt sent before and, with
multi-turn, on the earlier turns' prompts (not their answers: the cache holds prompt blocks).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from stacksim.scenario import schema as S

# vLLM's default KV block size (vLLM CacheConfig.block_size 16); used for gateway targets, whose
# engine is not known when the traffic is generated.
DEFAULT_BLOCK_TOKENS = 16
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64 finaliser


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class PromptPlan:
    """Which prompt each request of a workload sends, and its length."""

    spec: S.SharedPrefix
    salt: int  # from the workload's name: two workloads never share prompts
    prompt: np.ndarray  # int64, 0 .. groups x per_group - 1; its group is prompt // per_group
    turn: np.ndarray  # int64, earlier requests of the same session (0 without multi_turn)
    input_tokens: np.ndarray  # int64

    def group(self, i: int) -> int:
        return int(self.prompt[i]) // self.spec.num_prompts_per_group


def plan_prompts(spec: S.SharedPrefix, name: str, position: np.ndarray, output_tokens: np.ndarray,
                 rng: np.random.Generator) -> PromptPlan:
    """The prompt of each request, in arrival order. ``position``: the request's number within
    its load stage (inference-perf restarts the cycle each stage), or its number in the workload.
    ``rng`` draws the shuffle of the prompts (inference-perf's ``random.shuffle``)."""
    n_prompts = spec.num_groups * spec.num_prompts_per_group
    order = rng.permutation(n_prompts).astype(np.int64)
    prompt = order[np.asarray(position, dtype=np.int64) % n_prompts]
    n = len(prompt)
    turn = np.zeros(n, dtype=np.int64)
    inp = np.full(n, spec.prompt_tokens, dtype=np.int64)
    if spec.multi_turn and n:
        # Per session, in arrival order: its turn number and the answers sent before it.
        idx = np.argsort(prompt, kind="stable")
        p = prompt[idx]
        first = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
        run_start = np.repeat(first, np.diff(np.r_[first, n]))
        turn[idx] = np.arange(n) - run_start
        out = np.asarray(output_tokens, dtype=np.int64)[idx]
        before = np.cumsum(out) - out  # answers of earlier requests in sorted order...
        history = before - before[run_start]  # ...of this session only
        inp[idx] = spec.system_prompt_len + (turn[idx] + 1) * spec.question_len + history
    return PromptPlan(spec, zlib.crc32(name.encode("utf-8")), prompt, turn, inp)


def prompt_blocks(plan: PromptPlan, i: int, block_tokens: int) -> np.ndarray:
    """Block hash ids of request ``i``'s prompt, ``block_tokens`` tokens each (the last may be
    partial), for ``RequestTable.set_blocks``."""
    spec = plan.spec
    length = int(plan.input_tokens[i])
    full, rest = divmod(length, block_tokens)
    k = np.arange(full + (1 if rest else 0), dtype=np.uint64)
    size = np.full(len(k), block_tokens, dtype=np.uint64)
    if rest:
        size[-1] = rest
    session = np.uint64(int(plan.prompt[i]))
    group = np.uint64(plan.group(i))
    in_system = (k + np.uint64(1)) * np.uint64(block_tokens) <= np.uint64(spec.system_prompt_len)
    in_system &= size == np.uint64(block_tokens)
    owner = np.where(in_system, group | np.uint64(1) << np.uint64(40), session)
    key = _mix(np.full(len(k), np.uint64(plan.salt), dtype=np.uint64) ^ _mix(owner))
    key = _mix(key ^ _mix(k | size << np.uint64(32)))
    return (key >> np.uint64(1)).astype(np.int64)


def stage_positions(stage: np.ndarray | None, n: int) -> np.ndarray:
    """Each request's number within its load stage (``stage`` non-decreasing, as arrivals of a
    ``multi_stage`` process are), or within the workload without stages."""
    if stage is None or n == 0:
        return np.arange(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, stage[1:] != stage[:-1]])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))


def all_prompt_blocks(plan: PromptPlan, block_tokens: int) -> list[np.ndarray]:
    """:func:`prompt_blocks` of every request of the plan; requests sending the same prompt share
    one read-only array."""
    out: list[np.ndarray] = []
    seen: dict[tuple[int, int], np.ndarray] = {}
    for i in range(len(plan.prompt)):
        key = (int(plan.prompt[i]), int(plan.input_tokens[i]))
        h = seen.get(key)
        if h is None:
            h = prompt_blocks(plan, i, block_tokens)
            h.flags.writeable = False
            seen[key] = h
        out.append(h)
    return out
