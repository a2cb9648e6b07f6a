"""Building the policy: the initial weights (downloaded, local, or a tiny random-init model built
over the env's words), LoRA adapters, and the frozen reference model for the KL penalty."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agentpo.config import Config, LoraConfig
from agentpo.envs import text_spec
from agentpo.rollout.prompting import PromptTemplate


def task_words(env_id: str, env_kwargs: dict[str, Any], template: PromptTemplate) -> list[str]:
    """Every word a tiny model must read or write: the env's declared ``vocabulary(env_kwargs)``, the
    template's fixed words and its markup tags (``<action>`` and the stop strings: one token each)."""
    from agentpo.models.tiny import text_words

    vocabulary = text_spec(env_id).vocabulary
    if vocabulary is None:
        raise ValueError(
            f"model.source=tiny needs an env that declares a vocabulary (TextEnvSpec.vocabulary); {env_id} has none"
        )
    words = list(vocabulary(env_kwargs))
    for text in (template.system, template.first, template.next, template.followup, template.history_entry):
        words += text_words("".join(literal for literal, *_ in string.Formatter().parse(text)))
    for stop in template.stop:
        words += text_words(stop)
    return list(dict.fromkeys(words))


def initial_model_dir(config: Config, run_dir: Path) -> str:
    """Where the run's starting weights live: ``model.path``, or a tiny model built once in RUN_DIR/init_model."""
    if config.model.source == "pretrained":
        return config.model.path
    from agentpo.models.tiny import build_tiny_model

    out = run_dir / "init_model"
    if not (out / "config.json").exists():
        words = task_words(config.env.id, config.env.kwargs, PromptTemplate.load(config.prompt_template))
        tiny = config.model.tiny
        build_tiny_model(
            out,
            words,
            hidden_size=tiny.hidden_size,
            num_layers=tiny.num_layers,
            num_heads=tiny.num_heads,
            seed=config.train.seed,
            arch=tiny.arch,
        )
    return str(out)


def load_model(model_dir: str, *, device: torch.device) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A ``save_pretrained`` folder (or hub id) as fp32 weights on ``device``, with its tokenizer.

    A LoRA checkpoint folder (``adapter_config.json``: the adapter only) is loaded onto its base
    model and merged, so every caller gets a plain model. Training and evaluation both load here.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if (Path(model_dir) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(device), tokenizer


def load_policy(
    model_dir: str, lora: LoraConfig, *, device: torch.device, adapter_dir: Path | None = None
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The trainable policy (fp32 master weights) and its tokenizer.

    With ``lora.rank > 0`` the base weights are frozen and peft adapters are added, or loaded from
    ``adapter_dir`` when resuming.
    """
    base, tokenizer = load_model(model_dir, device=device)
    model: torch.nn.Module = base
    if lora.rank > 0:
        from peft import LoraConfig as PeftLoraConfig
        from peft import PeftModel, get_peft_model

        if adapter_dir is not None:
            model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
        else:
            model = get_peft_model(
                base,
                PeftLoraConfig(
                    r=lora.rank,
                    lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; the scale alpha / r takes a float
                    lora_dropout=lora.dropout,
                    target_modules=list(lora.target_modules),
                    task_type="CAUSAL_LM",
                ),
            )
    model.train()
    return model, tokenizer


def start_policy(
    config: Config, run_dir: Path, *, device: torch.device, resume: bool
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, Path | None, str]:
    """The policy a run starts from: its latest checkpoint when resuming, else the initial weights.

    Returns ``(model, tokenizer, checkpoint, init_dir)``: the checkpoint resumed from (None for a
    fresh run) and the initial weights' folder (the reference policy's).

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``run_dir``.
    """
    from agentpo.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    init_dir = initial_model_dir(config, run_dir)
    lora = config.train.lora.rank > 0
    model, tokenizer = load_policy(
        str(checkpoint / "model") if checkpoint is not None and not lora else init_dir,
        config.train.lora,
        device=device,
        adapter_dir=checkpoint / "model" if checkpoint is not None and lora else None,
    )
    return model, tokenizer, checkpoint, init_dir


def load_reference(model_dir: str, *, device: torch.device) -> torch.nn.Module:
    """A frozen copy of the initial policy, for the KL penalty."""
    model, _ = load_model(model_dir, device=device)
    model.eval().requires_grad_(False)
    return model
