"""Forward + backward time of the HölderPO loss against GRPO token-mean, from given log-probs.

The batch looks like a multi-turn rollout: every episode is one row of ``--tokens`` tokens, a prompt
that is not trained, then turns of observation tokens (not trained) and action tokens (trained).
All cases run in one process, interleaved repeat by repeat (in a rotating order), so machine noise
hits them alike; the result is each case's median and its ratio to GRPO token-mean (target ≤ 1.5×)::

    OMP_NUM_THREADS=1 python benchmarks/loss_overhead.py --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from agentpo.algos import PolicyLossInput, PolicyLossSettings, policy_loss


@dataclass(frozen=True)
class Case:
    label: str
    scope: str  # "trajectory": one unit per episode; "turn": one unit per turn
    loss: Callable[[PolicyLossInput], Tensor]


def registered(name: str, settings: PolicyLossSettings) -> Callable[[PolicyLossInput], Tensor]:
    return lambda inp: policy_loss(name)(inp, settings)[0]


def bare_grpo_token_mean(inp: PolicyLossInput) -> Tensor:
    """PPO clip + token-mean in five lines: no input checks, no metrics, NaN-unsafe on masked tokens."""
    ratio = torch.exp(inp.logprobs - inp.old_logprobs)
    objective = torch.minimum(ratio * inp.advantages, ratio.clamp(0.8, 1.2) * inp.advantages)
    return -(objective * inp.mask).sum() / inp.mask.sum()


CASES = (
    Case("grpo token-mean (baseline)", "trajectory", registered("grpo", PolicyLossSettings(agg_mode="token-mean"))),
    Case("grpo seq-mean-token-mean", "trajectory", registered("grpo", PolicyLossSettings())),
    Case("holder p=2", "trajectory", registered("holder", PolicyLossSettings(p=2.0))),
    Case("holder p=2", "turn", registered("holder", PolicyLossSettings(p=2.0))),
    Case("holder p=-2", "trajectory", registered("holder", PolicyLossSettings(p=-2.0))),
    Case("holder_token p=2", "trajectory", registered("holder_token", PolicyLossSettings(p=2.0))),
    Case("gspo", "trajectory", registered("gspo", PolicyLossSettings(clip_low=1 - 3e-4, clip_high=1 + 4e-4))),
    Case("bare-torch grpo token-mean, no metrics", "trajectory", bare_grpo_token_mean),
)


def make_batch(
    episodes: int, tokens: int, prompt: int, observation: int, action: int, seed: int
) -> dict[str, torch.Tensor]:
    """Log-probs, advantages, mask and both scopes' unit ids, each ``[episodes, tokens]``."""
    gen = torch.Generator().manual_seed(seed)
    position = torch.arange(tokens)
    in_turns = (position - prompt).clamp_min(0)
    turn = in_turns // (observation + action)
    mask = ((position >= prompt) & (in_turns % (observation + action) >= observation)).float().expand(episodes, -1)
    episode = torch.arange(episodes)[:, None].expand(-1, tokens)
    turns_per_episode = int(turn.max()) + 1
    old = -torch.rand(episodes, tokens, generator=gen) * 4
    return {
        "old": old,
        "new": old + 0.05 * torch.randn(episodes, tokens, generator=gen),  # a few updates off-policy
        "advantages": torch.randn(episodes, 1, generator=gen).expand(-1, tokens).contiguous(),
        "mask": mask.contiguous(),
        "trajectory": episode.contiguous(),
        "turn": (episode * turns_per_episode + turn).contiguous(),
        "num_trajectory": torch.tensor(episodes),
        "num_turn": torch.tensor(episodes * turns_per_episode),
    }


def time_case(case: Case, batch: dict[str, torch.Tensor]) -> float:
    """Seconds for one forward + backward of ``case``'s loss."""
    logprobs = batch["new"].clone().requires_grad_(True)
    inp = PolicyLossInput(
        logprobs=logprobs,
        old_logprobs=batch["old"],
        advantages=batch["advantages"],
        mask=batch["mask"],
        segment_ids=batch[case.scope],
        num_segments=int(batch[f"num_{case.scope}"]),
    )
    start = time.perf_counter()
    case.loss(inp).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per episode (one row each)")
    parser.add_argument("--prompt", type=int, default=256, help="untrained prompt tokens per episode")
    parser.add_argument("--observation", type=int, default=48, help="untrained observation tokens per turn")
    parser.add_argument("--action", type=int, default=80, help="trained action tokens per turn")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    batch = make_batch(args.episodes, args.tokens, args.prompt, args.observation, args.action, args.seed)
    times: dict[int, list[float]] = {index: [] for index in range(len(CASES))}
    for repeat in range(args.warmup + args.repeats):
        shift = repeat % len(CASES)  # rotate the order so no case always runs first
        for index in list(range(len(CASES)))[shift:] + list(range(len(CASES)))[:shift]:
            elapsed = time_case(CASES[index], batch)
            if repeat >= args.warmup:
                times[index].append(elapsed)

    baseline = statistics.median(times[0])
    trained = int(batch["mask"].sum())
    print(
        f"{args.episodes} episodes x {args.tokens} tokens ({trained} trained), {int(batch['num_turn'])} turns, "
        f"{args.repeats} repeats, {args.threads} thread(s), torch {torch.__version__}"
    )
    print("| loss | scope | median fwd+bwd (ms) | vs grpo token-mean |")
    print("|---|---|---|---|")
    for index, case in enumerate(CASES):
        median = statistics.median(times[index])
        print(f"| {case.label} | {case.scope} | {median * 1e3:.1f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
