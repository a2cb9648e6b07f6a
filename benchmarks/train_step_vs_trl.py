"""Seconds per full training step (generate + update): agentpo's Trainer vs TRL's GRPOTrainer.

Both train the same tiny random-init model (built by agentpo over the Corridor words) on the same
single-turn batch shape: 8 prompts x 4 samples x 32 new tokens, fp32, one torch thread, no KL.

Equal work on both sides:
- every response is exactly 32 tokens: the tokenizer's EOS is moved to an id outside the model's
  vocabulary (a random-init model would otherwise end about half its responses early, at random);
  the script checks the generated-token counts of both sides and reports them;
- one optimizer step per rollout batch: TRL's defaults (``num_iterations=1``, one generation per
  optimizer step) take pi_old as the detached current log-probs, so agentpo runs with one minibatch,
  one epoch and the engine's sampling log-probs as pi_old (``train.minibatches=1``,
  ``train.recompute_old_logprobs=false``). agentpo with K=2 minibatches and pi_old recomputed
  makes two optimizer steps per batch and is reported in its own row for reference.

TRL runs with its defaults, which include gradient checkpointing (one more forward pass per
step, to save memory); ``--trl-no-checkpointing`` turns it off for the strictest comparison. A
"floor" row times a bare loop doing the same arithmetic with no bookkeeping at all: a KV-cache
sampling loop, one forward/backward of the sampled tokens and one AdamW step (see
:func:`bare_step`), so the table shows how far above the arithmetic each side sits. The
"arithmetic bound" is the FLOPs of agentpo's step (:func:`step_flops`) at this core's best fp32
GEMM rate: agentpo's time with every multiply at peak speed and nothing else, so TRL / bound caps
the lead that removing overhead could ever give it over TRL.

The sides alternate step by step in one process: TRL's callback times each of its steps and then
runs one step of each other side, so machine noise hits all alike. The first step of each side
warms caches and is dropped. Prints medians and ratios; needs the ``bench`` extra
(``pip install trl``).

    OMP_NUM_THREADS=1 python benchmarks/train_step_vs_trl.py --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PROMPTS, SAMPLES, NEW_TOKENS = 8, 4, 32
#: (hidden size, layers, heads) of the models compared: the quick start's size and a ~4M model.
MODEL_SIZES: tuple[tuple[int, int, int], ...] = ((64, 2, 4), (256, 4, 4))
#: A token the tokenizer names as EOS but the model cannot emit (its id is past the vocabulary).
NEVER_EOS = "<|never_eos|>"


def agentpo_config(run_dir: Path, size: tuple[int, int, int], *, fair: bool) -> dict:
    """A run on one-room corridors: each episode is one prompt and one 32-token response.

    ``fair``: one optimizer step per batch with the engine's log-probs as pi_old (TRL's defaults);
    else K=2 minibatches with pi_old recomputed by a trainer forward pass (``recompute_old_logprobs=true``;
    the default ``auto`` skips that pass when the engine's log-probs are exact).
    """
    hidden, layers, heads = size
    train = {"steps": 10_000, "batch_tasks": PROMPTS}
    if fair:
        train |= {"minibatches": 1, "recompute_old_logprobs": False}
    else:
        train |= {"minibatches": 2, "recompute_old_logprobs": True}
    return {
        "run_dir": str(run_dir),
        "model": {"source": "tiny", "tiny": {"hidden_size": hidden, "num_layers": layers, "num_heads": heads}},
        "env": {"id": "agentpo/Corridor-v0", "kwargs": {"length": 1}},
        "rollout": {"group_size": SAMPLES, "max_turns": 1, "history": 0, "max_new_tokens": NEW_TOKENS},
        "algorithm": {"loss": "grpo", "agg_mode": "seq-mean-token-mean"},
        "optim": {"lr": 1e-5},
        "train": train,
        "eval": {"tasks": 0},
        "logging": {"tensorboard": False, "progress": False},
    }


def build_model(run_dir: Path, size: tuple[int, int, int]) -> Path:
    """Build the tiny model once in ``run_dir/init_model`` with an EOS that can never be sampled."""
    from transformers import AutoTokenizer, GenerationConfig

    from agentpo.config import config_from_dict
    from agentpo.training.policy import initial_model_dir

    model_dir = Path(initial_model_dir(config_from_dict(agentpo_config(run_dir, size, fair=True)), run_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_special_tokens({"eos_token": NEVER_EOS})
    tokenizer.save_pretrained(model_dir)
    generation = GenerationConfig.from_pretrained(model_dir)
    generation.eos_token_id = tokenizer.eos_token_id
    generation.save_pretrained(model_dir)
    return model_dir


def exit_reward(prompts, completions, completion_ids, lengths: list[int], **kwargs) -> list[float]:
    """1 when the completion names the exit that the prompt states (the Corridor rule).

    Records each completion's token count in ``lengths`` (bound with functools.partial).
    """
    from agentpo.envs.corridor import parse_direction

    lengths.extend(len(ids) for ids in completion_ids)
    rewards = []
    for prompt, completion in zip(prompts, completions):
        exit_word = prompt[-1]["content"].split()[-2]
        rewards.append(float(parse_direction(completion[-1]["content"]) == exit_word))
    return rewards


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, prompt_ids: torch.Tensor) -> None:
    """The arithmetic of one step with nothing else: sample NEW_TOKENS per row, one policy-gradient update.

    Args:
        model: a causal LM in train mode.
        optimizer: its AdamW.
        prompt_ids: ``[rows, P]`` equal-length prompts (no padding).
    """
    from agentpo.models.kv_cache import cache_kwargs, output_cache

    with torch.inference_mode():
        out = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1)
        sampled = []
        for _ in range(NEW_TOKENS):
            sampled.append(torch.multinomial(out.logits[:, -1].softmax(-1), 1))
            if len(sampled) < NEW_TOKENS:
                out = model(input_ids=sampled[-1], use_cache=True, **cache_kwargs(output_cache(out)))
    ids = torch.cat([prompt_ids, *sampled], dim=1)
    logits = model(input_ids=ids, logits_to_keep=NEW_TOKENS + 1).logits[:, :-1]
    logprobs = logits.log_softmax(-1).gather(-1, ids[:, -NEW_TOKENS:, None]).squeeze(-1)
    advantages = torch.randn(ids.shape[0], 1)
    loss = -(advantages * (logprobs - logprobs.detach()).exp()).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def step_flops(trainer, step: int) -> float:
    """FLOPs of one agentpo training step as torch's FlopCounterMode counts them (matrix multiplies)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(step)
    return float(counter.get_total_flops())


def best_gemm_flops_per_s(repeats: int = 20) -> float:
    """The best fp32 matrix-multiply rate of this core (1024^3 GEMM, best of ``repeats``), in FLOP/s."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


@dataclass
class Timings:
    """Seconds per step of each side, and the response lengths each side generated."""

    trl: list[float]
    fair: list[float]
    default: list[float]
    floor: list[float]
    trl_lengths: list[int]
    our_lengths: list[float]
    flops: float = 0.0  # FLOPs of one agentpo step (1 minibatch), see step_flops


def measure(size: tuple[int, int, int], steps: int, trl_checkpointing: bool) -> Timings:
    """Alternate TRL, agentpo (TRL-like settings), agentpo (defaults) and the floor, ``steps`` + 1 steps each."""
    import functools

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agentpo.config import config_from_dict
    from agentpo.envs.corridor import CorridorEnv
    from agentpo.training.trainer import Trainer

    timings = Timings([], [], [], [], [], [])
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_model(Path(scratch) / "model", size)
        ours = {}
        for name, fair in (("fair", True), ("default", False)):
            run_dir = Path(scratch) / name
            run_dir.mkdir()
            (run_dir / "init_model").symlink_to(model_dir)
            ours[name] = Trainer(config_from_dict(agentpo_config(run_dir, size, fair=fair)))

        env = CorridorEnv(length=1)
        prompts = [[{"role": "user", "content": env.reset(seed=s)[0]}] for s in range(64)]
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        floor_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
        floor_optimizer = torch.optim.AdamW(floor_model.parameters(), lr=1e-5)
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts[:PROMPTS]
        ]
        floor_prompts = torch.tensor(tokenizer(texts, add_special_tokens=False).input_ids)
        floor_prompts = floor_prompts.repeat_interleave(SAMPLES, dim=0)
        trl_args = GRPOConfig(
            output_dir=str(Path(scratch) / "trl"),
            per_device_train_batch_size=PROMPTS * SAMPLES,
            num_generations=SAMPLES,
            max_completion_length=NEW_TOKENS,
            temperature=1.0,
            learning_rate=1e-5,
            beta=0.0,
            loss_type="grpo",
            gradient_checkpointing=trl_checkpointing,
            max_steps=steps + 1,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            seed=0,
        )

        class Alternate(TrainerCallback):
            """Time each TRL step, then run one step of each agentpo trainer outside TRL's timing."""

            def on_step_begin(self, *_args, **_kwargs) -> None:
                self.start = time.perf_counter()

            def on_step_end(self, _args, state, *_rest, **_kwargs) -> None:
                timings.trl.append(time.perf_counter() - self.start)
                for name, trainer in ours.items():
                    start = time.perf_counter()
                    metrics = trainer.train_step(state.global_step)
                    getattr(timings, name).append(time.perf_counter() - start)
                    timings.our_lengths.append(metrics["tokens_generated"])
                start = time.perf_counter()
                bare_step(floor_model, floor_optimizer, floor_prompts)
                timings.floor.append(time.perf_counter() - start)

        reward = functools.partial(exit_reward, lengths=timings.trl_lengths)
        reward.__name__ = "exit_reward"  # TRL names reward columns after the function
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
            processing_class=tokenizer,
            reward_funcs=reward,
            args=trl_args,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
            callbacks=[Alternate()],
        )
        trainer.train()
        timings.flops = step_flops(ours["fair"], steps + 2)
        for trainer in ours.values():
            trainer.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side (after one warm-up step)")
    parser.add_argument(
        "--trl-no-checkpointing", action="store_true", help="turn off TRL's default gradient checkpointing"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    gemm_rate = best_gemm_flops_per_s()

    rows = []
    for size in MODEL_SIZES:
        t = measure(size, args.steps, trl_checkpointing=not args.trl_no_checkpointing)
        if set(t.trl_lengths) != {NEW_TOKENS} or set(t.our_lengths) != {NEW_TOKENS}:
            raise RuntimeError(f"unequal work: TRL lengths {set(t.trl_lengths)}, agentpo {set(t.our_lengths)}")
        rows.append((size, *(statistics.median(x[1:]) for x in (t.trl, t.fair, t.default, t.floor)), t.flops))

    checkpointing = "off" if args.trl_no_checkpointing else "on (its default)"
    print(
        f"batch: {PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} new tokens each side, fp32, 1 thread, "
        f"{args.steps} timed steps each (medians, s/step); TRL gradient checkpointing {checkpointing}"
    )
    print(
        f"arithmetic bound: FLOPs of agentpo's step at this core's best fp32 GEMM rate "
        f"({gemm_rate / 1e9:.0f} GFLOP/s, 1024^3); TRL / bound caps the lead removing overhead could give"
    )
    print(
        "| model (hidden, layers) | TRL GRPOTrainer | agentpo, 1 minibatch | TRL / agentpo "
        "| agentpo K=2, recompute | TRL / agentpo K=2 | bare-loop floor | arithmetic bound | TRL / bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (hidden, layers, _), trl, fair, default, floor, flops in rows:
        bound = flops / gemm_rate
        print(
            f"| {hidden}, {layers} | {trl:.3f} | {fair:.3f} | {trl / fair:.2f}x | {default:.3f} "
            f"| {trl / default:.2f}x | {floor:.3f} | {bound:.3f} | {trl / bound:.2f}x |"
        )


if __name__ == "__main__":
    main()
