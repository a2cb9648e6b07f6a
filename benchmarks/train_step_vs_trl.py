"""Seconds per full training step (generate + update): agentpo's Trainer vs TRL's GRPOTrainer.

Both train the same tiny random-init model (built by agentpo over the Corridor words) on the same
single-turn batch shape: 8 prompts x 4 samples x 32 new tokens, fp32, one torch thread, no KL, one
optimizer step per batch. The two alternate step by step in one process: TRL's callback times each
of its steps and then runs one agentpo step, so machine noise hits both alike. Prints the medians
and their ratio; needs the ``bench`` extra (``pip install trl``).

    python benchmarks/train_step_vs_trl.py --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPTS, SAMPLES, NEW_TOKENS = 8, 4, 32


def agentpo_trainer(run_dir: Path):
    """A Trainer on one-room corridors: each episode is one prompt and one 32-token response."""
    from agentpo.config import config_from_dict
    from agentpo.training.trainer import Trainer

    config = config_from_dict(
        {
            "run_dir": str(run_dir),
            "model": {"source": "tiny", "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4}},
            "env": {"id": "agentpo/Corridor-v0", "kwargs": {"length": 1, "max_turns": 1}},
            "rollout": {"group_size": SAMPLES, "max_turns": 1, "history": 0, "max_new_tokens": NEW_TOKENS},
            "algorithm": {"loss": "grpo", "agg_mode": "seq-mean-token-mean"},
            "optim": {"lr": 1e-5},
            # One optimizer step per batch with the engine's log-probs as pi_old, as TRL does.
            "train": {"steps": 10_000, "batch_tasks": PROMPTS, "minibatches": 1, "recompute_old_logprobs": False},
            "eval": {"tasks": 0},
            "logging": {"tensorboard": False, "progress": False},
        }
    )
    return Trainer(config)


def exit_reward(prompts, completions, **kwargs) -> list[float]:
    """1 when the completion names the exit that the prompt states (the Corridor rule)."""
    from agentpo.envs.corridor import parse_direction

    rewards = []
    for prompt, completion in zip(prompts, completions):
        exit_word = prompt[-1]["content"].split()[-2]
        rewards.append(float(parse_direction(completion[-1]["content"]) == exit_word))
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per side (after one warm-up step)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agentpo.envs.corridor import CorridorEnv

    with tempfile.TemporaryDirectory() as scratch:
        ours = agentpo_trainer(Path(scratch) / "agentpo")
        model_dir = Path(scratch) / "agentpo" / "init_model"
        env = CorridorEnv(length=1, max_turns=1)
        prompts = [[{"role": "user", "content": env.reset(seed=s)[0]}] for s in range(64)]
        trl_args = GRPOConfig(
            output_dir=str(Path(scratch) / "trl"),
            per_device_train_batch_size=PROMPTS * SAMPLES,
            num_generations=SAMPLES,
            max_completion_length=NEW_TOKENS,
            temperature=1.0,
            learning_rate=1e-5,
            beta=0.0,
            loss_type="grpo",
            max_steps=args.steps + 1,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            seed=0,
        )
        trl_times: list[float] = []
        our_times: list[float] = []

        class Alternate(TrainerCallback):
            """Time each TRL step, then run one agentpo step outside TRL's timing."""

            def on_step_begin(self, *_args, **_kwargs) -> None:
                self.start = time.perf_counter()

            def on_step_end(self, _args, state, *_rest, **_kwargs) -> None:
                trl_times.append(time.perf_counter() - self.start)
                start = time.perf_counter()
                ours.train_step(state.global_step)
                our_times.append(time.perf_counter() - start)

        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            reward_funcs=exit_reward,
            args=trl_args,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
            callbacks=[Alternate()],
        )
        trainer.train()
        ours.close()

    # TRL's per-step timing starts at its training step, so its generation sits inside: both sides
    # time generate + update. The first step of each side warms caches and is dropped.
    trl_median = statistics.median(trl_times[1:])
    our_median = statistics.median(our_times[1:])
    print(f"batch: {PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} new tokens, fp32, 1 thread, {args.steps} steps each")
    print(f"agentpo Trainer.train_step : median {our_median:.3f} s/step")
    print(f"TRL GRPOTrainer step       : median {trl_median:.3f} s/step")
    print(f"ratio TRL / agentpo        : {trl_median / our_median:.2f}x")


if __name__ == "__main__":
    main()
