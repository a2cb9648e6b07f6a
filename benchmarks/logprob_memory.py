"""Peak memory and time of the trainer's log-prob forward + backward: full logits vs chunks.

A random-init Llama with a real-sized vocabulary (hidden 64, 2 layers, ``--vocab`` tokens) scores
``--rows`` rows of ``--tokens`` tokens whose last ``--response`` tokens are the action tokens, the
shape of a group of long math responses. Each case runs in a fresh process, so its peak resident
memory (``ru_maxrss``) minus the resident memory just before the step is what the step itself
needs. Cases: full logits (``train.max_logits_mb`` above the logits' size) and chunked at a few
budgets; the log-prob values of every case are checked against the full path::

    OMP_NUM_THREADS=1 python benchmarks/logprob_memory.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agentpo.training.logprobs import token_logprobs


def run_case(vocab: int, rows: int, tokens: int, response: int, budget_mb: float, repeats: int) -> dict:
    """One case in this process: median seconds of forward + backward, peak extra MiB, and the log-probs."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4
    )
    model = LlamaForCausalLM(config)
    input_ids = torch.randint(0, vocab, (rows, tokens))
    # Distinct prompts, so that only the chunking differs between cases (no shared prefix).
    attention_mask = torch.ones_like(input_ids)
    targets = torch.zeros_like(input_ids)
    targets[:, tokens - response :] = 1
    kwargs = dict(from_column=tokens - response, targets=targets, with_entropy=True, share_prefix=False)
    seconds = []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logprobs, _ = token_logprobs(model, input_ids, attention_mask, max_logits_bytes=budget_mb * 2**20, **kwargs)
        (logprobs.sum() / targets.sum()).backward()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "seconds": statistics.median(seconds),
        "peak_mib": (peak - rss_before) / 1024,
        "logprobs": logprobs.detach(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--response", type=int, default=896)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    logits_mib = args.rows * args.response * args.vocab * 4 / 2**20
    budgets = [("full logits", 2 * logits_mib + 1)] + [(f"chunks of {mib} MiB", float(mib)) for mib in (512, 128, 32)]
    # Tensors above 64 KiB get their own mmap and go back to the OS when freed, so the resident
    # peak follows live memory rather than what the allocator keeps cached.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    context = multiprocessing.get_context("spawn")
    results = []
    for label, budget in budgets:
        with context.Pool(1) as pool:
            shape = (args.vocab, args.rows, args.tokens, args.response, budget, args.repeats)
            results.append((label, pool.apply(run_case, shape)))
    reference = results[0][1]["logprobs"]
    print(
        f"{args.rows} rows x {args.tokens} tokens ({args.response} action tokens each), vocabulary {args.vocab}: "
        f"one fp32 copy of the action positions' logits is {logits_mib:.0f} MiB; fp32, 1 thread"
    )
    print("| case | forward + backward s | peak extra memory MiB | max abs log-prob difference to full |")
    print("|---|---|---|---|")
    for label, result in results:
        difference = float((result["logprobs"] - reference).abs().max())
        print(f"| {label} | {result['seconds']:.2f} | {result['peak_mib']:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
