"""Typed configs: YAML + overrides load into frozen dataclasses; bad input names its key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from agentpo.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    describe,
    load_config,
    save_config,
)

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": {"source": "tiny"}}
#: Math has no word list for a tiny model: its configs name a model folder.
LOCAL = {"model": {"source": "pretrained", "path": "runs/some_model"}}


def test_defaults_and_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  source: tiny\ntrain:\n  steps: 5\n")
    config = load_config(
        path, ["optim.lr=3e-3", "train.bf16=true", "train.lora.target_modules=[q_proj, v_proj]", "env.kwargs.length=4"]
    )
    assert config.train.steps == 5
    assert config.optim.lr == 3e-3 and isinstance(config.optim.lr, float)  # YAML 1.1 reads "3e-3" as text
    assert config.train.bf16 is True
    assert config.train.lora.target_modules == ("q_proj", "v_proj")
    assert config.env.kwargs == {"length": 4}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.steps = 6  # type: ignore[misc]


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = config_from_dict({**TINY, "algorithm": {"p_schedule": "linear_dec", "p_min": -2.0, "p_max": 2.0}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({**TINY, "trian": {"steps": 1}}, "trian"),
        ({**TINY, "train": {"stpes": 1}}, "train.stpes"),
        ({**TINY, "train": {"steps": 0}}, "train.steps"),
        ({**TINY, "train": {"steps": "many"}}, "train.steps"),
        ({**TINY, "optim": {"lr": -1.0}}, "optim.lr"),
        ({**TINY, "algorithm": {"loss": "holdr"}}, "algorithm.loss"),
        ({**TINY, "algorithm": {"p_schedule": "sine"}}, "algorithm.p_schedule"),
        ({**TINY, "algorithm": {"divergence": "kl9"}}, "algorithm.divergence"),
        ({**TINY, "algorithm": {"advantage": "gae"}}, "algorithm.advantage"),
        ({**TINY, "algorithm": {"scope": "episode"}}, "algorithm.scope"),
        ({**TINY, "algorithm": {"p_min": 3.0, "p_max": 1.0}}, "algorithm.p_min"),
        ({**TINY, "algorithm": {"p_counter": "epoch"}}, "algorithm.p_counter"),
        ({**TINY, "algorithm": {"advantage_samples": "turn"}}, "algorithm.advantage_samples"),
        ({**TINY, "algorithm": {"gigpo": {"gamma": 1.5}}}, "algorithm.gigpo.gamma"),
        ({**TINY, "algorithm": {"gigpo": {"similarity": 0.0}}}, "algorithm.gigpo.similarity"),
        ({**TINY, "algorithm": {"entropy_coef": -0.1}}, "algorithm.entropy_coef"),
        ({**TINY, "algorithm": {"advantage": "gigpo"}}, "algorithm.scope"),  # holder needs one advantage per unit
        ({**TINY, "algorithm": {"advantage_samples": "step", "loss": "gspo"}}, "algorithm.scope"),
        ({**TINY, "model": {"source": "tiny", "tiny": {"hidden_size": 30, "num_heads": 4}}}, "model.tiny.hidden_size"),
        ({"model": {"source": "pretrained"}}, "model.path"),
        ({**TINY, "env": {"id": "agentpo/Nowhere-v0"}}, "env.id"),
        ({**TINY, "rollout": {"group_size": 1}}, "rollout.group_size"),
        ({**TINY, "rollout": {"mode": "eager"}}, "rollout.mode"),
        ({**TINY, "rollout": {"max_in_flight": -1}}, "rollout.max_in_flight"),
        ({**TINY, "train": {"batch_tasks": 1, "minibatches": 9}, "rollout": {"group_size": 4}}, "train.minibatches"),
        ({**TINY, "train": {"micro_batch_episodes": 100}}, "train.micro_batch_episodes"),
        ({**TINY, "logging": {"tensorboard": "maybe"}}, "logging.tensorboard"),
        ({**TINY, "optim": {"betas": [0.9]}}, "optim.betas[1]"),  # the second value is missing
        ({**TINY, "train": {"recompute_old_logprobs": "sometimes"}}, "train.recompute_old_logprobs"),
        ({**TINY, "eval": {"tasks": -1}}, "eval.tasks"),
        ({**TINY, "eval": {"best_metric": "val/mean_steps"}}, "eval.best_metric"),
        ({**TINY, "env": {"id": "agentpo/ALFWorld-v0"}, "eval": {"split": "train"}}, "eval.split"),
        (
            {**TINY, "env": {"id": "agentpo/ALFWorld-v0"}, "eval": {"env_kwargs": {"split": "valid_seen"}}},
            "eval.env_kwargs",
        ),
        ({**LOCAL, "env": {"id": "agentpo/Math-v0"}, "eval": {"datasets": ["aime25"]}}, "eval.datasets"),
        ({**LOCAL, "env": {"id": "agentpo/Math-v0"}, "eval": {"best_metric": "val/success_rate"}}, "eval.best_metric"),
    ],
)
def test_bad_input_names_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_registry_miss_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError, match=r"choose one of \[.*'holder'.*\]"):
        config_from_dict({**TINY, "algorithm": {"loss": "nope"}})


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match=re.escape("section.key=value")):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError) as caught:
        apply_overrides({"train": {"steps": 3}}, ["train.steps.x=1"])
    assert caught.value.key == "train.steps"


def test_one_minibatch_one_epoch_warns_that_p_does_nothing() -> None:
    lone = config_from_dict({**TINY, "train": {"minibatches": 1, "epochs": 1}})
    assert any("every importance ratio is 1" in w for w in lone.warnings())
    assert not config_from_dict({**TINY, "train": {"minibatches": 2}}).warnings()


def test_derived_sizes_are_properties() -> None:
    config = config_from_dict(
        {**TINY, "train": {"batch_tasks": 3, "minibatches": 4, "epochs": 2, "steps": 5}, "rollout": {"group_size": 5}}
    )
    assert config.episodes_per_batch == 15
    assert config.episodes_per_minibatch == 4
    assert config.optimizer_steps == 40


def test_every_field_is_described() -> None:
    lines = describe(Config)
    assert any(line.startswith("algorithm.p_schedule ") for line in lines)
    assert all(line.split(": ", 1)[1].strip() for line in lines), [
        line for line in lines if not line.split(": ", 1)[1].strip()
    ]


@pytest.fixture
def sft_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a folder holding the SFT stage's output, which the CPU RL recipes start from.

    Their ``model.path`` is relative to where the user runs them, and a fresh clone has no ``runs/``.
    """
    start = yaml.safe_load((REPO / "configs" / "alfworld_cpu_rl.yaml").read_text())["model"]["path"]
    (tmp_path / start).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("sft_output")
@pytest.mark.parametrize(
    "name", ["quickstart", "alfworld_holderpo", "math_holderpo", "alfworld_cpu_rl", "alfworld_cpu_rl_turn_penalty"]
)
def test_shipped_recipes_load_without_warnings(name: str) -> None:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.train.minibatches >= 2
    assert config.warnings() == []


@pytest.mark.usefixtures("sft_output")
def test_turn_penalty_recipe_is_the_cpu_recipe_with_two_changes() -> None:
    """What docs/results.md compares: the same RL stage except how inadmissible commands are charged."""
    published = load_config(REPO / "configs" / "alfworld_cpu_rl.yaml")
    assert not published.rollout.penalize_inadmissible and published.algorithm.advantage_samples == "episode"
    variant = load_config(REPO / "configs" / "alfworld_cpu_rl_turn_penalty.yaml")
    recipe = load_config(
        REPO / "configs" / "alfworld_cpu_rl.yaml",
        [f"run_dir={variant.run_dir}", "rollout.penalize_inadmissible=true", "algorithm.advantage_samples=step"],
    )
    assert variant == recipe


def test_a_config_extends_its_base(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "root.yaml").write_text(
        "model:\n  source: tiny\n  tiny: {hidden_size: 32, num_layers: 1}\n"
        "env:\n  kwargs: {length: 4, success_reward: 2.0}\ntrain:\n  steps: 5\n  seed: 3\n"
        "algorithm:\n  loss: grpo\n"
    )
    # Bases resolve relative to the file that names them, and may have bases of their own.
    (tmp_path / "recipes" / "mid.yaml").write_text("base: ../root.yaml\ntrain:\n  steps: 7\n")
    (tmp_path / "recipes" / "run.yaml").write_text(
        "base: mid.yaml\nmodel:\n  tiny: {num_layers: 2}\nenv:\n  kwargs: {length: 6}\n"
    )
    config = load_config(tmp_path / "recipes" / "run.yaml", ["train.seed=9"])
    assert (config.model.source, config.model.tiny.hidden_size, config.model.tiny.num_layers) == ("tiny", 32, 2)
    assert config.env.kwargs == {"length": 6, "success_reward": 2.0}  # mappings merge key by key
    assert (config.train.steps, config.train.seed, config.algorithm.loss) == (7, 9, "grpo")
    # The saved config is the merged one: it loads alone, without its bases.
    save_config(config, tmp_path / "saved.yaml")
    assert "base" not in (tmp_path / "saved.yaml").read_text()
    assert load_config(tmp_path / "saved.yaml") == config


def test_list_values_replace_the_base_ones(tmp_path: Path) -> None:
    (tmp_path / "root.yaml").write_text(
        "model:\n  source: tiny\ntrain:\n  lora:\n    target_modules: [q_proj, v_proj]\n"
    )
    (tmp_path / "run.yaml").write_text("base: root.yaml\ntrain:\n  lora:\n    target_modules: [o_proj]\n")
    assert load_config(tmp_path / "run.yaml").train.lora.target_modules == ("o_proj",)


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"run.yaml": "base: missing.yaml\n"}, "missing.yaml: cannot read the config file"),
        ({"run.yaml": "base: [a.yaml]\n"}, r"run.yaml: base: must name a YAML config file"),
        ({"run.yaml": "base: run.yaml\n"}, "cycle"),
        (
            {"run.yaml": "base: a.yaml\n", "a.yaml": "base: run.yaml\n"},
            r"cycle \(.*run.yaml -> .*a.yaml -> .*run.yaml\)",
        ),
        ({"run.yaml": "base: a.yaml\n", "a.yaml": "- not a mapping\n"}, "a.yaml: the file must hold a mapping"),
    ],
)
def test_a_broken_base_is_a_config_error(tmp_path: Path, files: dict[str, str], match: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "run.yaml")


def test_stage_1b_renders_walkthroughs_as_stage_1(tmp_path: Path) -> None:
    stage1 = load_config(REPO / "configs" / "alfworld_cpu_sft.yaml")
    model = ["model.path=" + str(tmp_path)]
    stage1b = load_config(REPO / "configs" / "alfworld_cpu_sft_all.yaml", model)
    assert stage1b.model.source == "pretrained" and (stage1b.sft.tasks, stage1b.sft.epochs) == (-1, 1)
    rendering = ("noise", "prompt_loss_weight", "response", "batch_turns")
    assert [getattr(stage1b.sft, k) for k in rendering] == [getattr(stage1.sft, k) for k in rendering]
    assert (stage1b.rollout, stage1b.env, stage1b.prompt_template) == (
        stage1.rollout,
        stage1.env,
        stage1.prompt_template,
    )


def test_recompute_setting_reads_yaml_booleans(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  source: tiny\ntrain:\n  recompute_old_logprobs: true\n")
    assert load_config(path).train.recompute_old_logprobs == "true"
    assert load_config(path, ["train.recompute_old_logprobs=false"]).train.recompute_old_logprobs == "false"
    assert load_config(path, ["train.recompute_old_logprobs=auto"]).train.recompute_old_logprobs == "auto"


def test_held_out_tasks_split_and_metrics_follow_the_env() -> None:
    alfworld = config_from_dict({**TINY, "env": {"id": "agentpo/ALFWorld-v0"}})
    assert (alfworld.env_spec.held_out.kind, alfworld.validation_split) == ("games", "valid_unseen")
    assert "val/success_rate/pick2" in alfworld.validation_success_metrics()
    math = config_from_dict(
        {
            **LOCAL,
            "env": {"id": "agentpo/Math-v0"},
            "eval": {"datasets": ["aime24"], "n": 4, "best_metric": "val/aime24/pass@4"},
        }
    )
    assert (math.env_spec.held_out.kind, math.validation_split) == ("datasets", "test")
    assert math.validation_success_metrics() == [
        "val/aime24/mean@4",
        "val/aime24/pass@1",
        "val/aime24/pass@2",
        "val/aime24/pass@4",
    ]
    five = ["aime24", "amc23", "math500", "minerva", "olympiadbench"]
    average = {**LOCAL, "env": {"id": "agentpo/Math-v0"}, "eval": {"datasets": five, "best_metric": "val/math_average"}}
    assert (
        config_from_dict({**average, "eval": {**average["eval"], "tasks": -1}}).eval.best_metric == "val/math_average"
    )
    with pytest.raises(ConfigError, match=re.escape("eval.best_metric")):  # the average needs every problem of all five
        config_from_dict(average)
    corridor = config_from_dict(TINY)
    assert corridor.env_spec.held_out.kind == "seeds"
    assert corridor.validation_success_metrics() == ["val/success_rate", "val/success_rate/corridor"]


def test_rollout_and_eval_defaults_come_from_the_env() -> None:
    corridor = config_from_dict(TINY)
    assert (corridor.rollout.max_turns, corridor.rollout.max_new_tokens, corridor.prompt_template) == (6, 3, "corridor")
    alfworld = config_from_dict({**TINY, "env": {"id": "agentpo/ALFWorld-v0"}, "rollout": {"max_turns": 7}})
    assert (alfworld.rollout.max_turns, alfworld.rollout.max_new_tokens, alfworld.eval.temperature) == (7, 512, 0.4)
    assert alfworld.prompt_template == "alfworld"


def test_a_loss_rejects_aggregations_it_declared_it_does_not_take() -> None:
    with pytest.raises(ConfigError, match="'dapo' aggregates by \\['token-mean'\\]") as caught:
        config_from_dict({**TINY, "algorithm": {"loss": "dapo", "agg_mode": "seq-mean-token-mean"}})
    assert caught.value.key == "algorithm.loss"
    assert config_from_dict({**TINY, "algorithm": {"loss": "dapo", "agg_mode": "token-mean"}}).algorithm.loss == "dapo"


def test_tiny_architectures_match_the_model_builder() -> None:
    from typing import get_args, get_type_hints

    from agentpo.config import TinyModelConfig
    from agentpo.models.tiny import ARCHITECTURES

    assert get_args(get_type_hints(TinyModelConfig)["arch"]) == ARCHITECTURES


def test_dry_run_imports_no_model_code(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from agentpo.cli import main; "
        f"main(['train', '--config', {str(REPO / 'configs' / 'quickstart.yaml')!r}, "
        f"'--dry-run', 'run_dir={tmp_path}']); "
        "print(sorted(m for m in sys.modules if m.startswith(('transformers.models', 'agentpo.models', 'peft'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_per_turn_advantages_fit_turn_scope_and_token_level_losses() -> None:
    for algorithm in (
        {"advantage": "gigpo", "scope": "turn"},
        {"advantage": "gigpo", "loss": "grpo", "agg_mode": "token-mean"},
        {"advantage_samples": "step", "loss": "holder", "scope": "turn"},
    ):
        assert config_from_dict({**TINY, "algorithm": algorithm}).algorithm.per_turn_advantages


def test_p_steps_warning_counts_the_schedule_counter() -> None:
    iterations = {"p_schedule": "linear_dec", "p_min": -2.0, "p_counter": "iteration"}
    config = config_from_dict(
        {**TINY, "train": {"steps": 10, "minibatches": 4}, "algorithm": {**iterations, "p_steps": 20}}
    )
    assert any("exceeds the run's 10 iteration steps" in note for note in config.warnings())
    config = config_from_dict(
        {**TINY, "train": {"steps": 10, "minibatches": 4}, "algorithm": {**iterations, "p_steps": 10}}
    )
    assert not any("p_steps" in note for note in config.warnings())
