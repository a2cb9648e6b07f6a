"""The tiny model builder: word-level tokenizer, deterministic random init, save/reload round trip."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.kv_cache import CACHE_KEY, cache_kwargs, output_cache
from agentpo.models.tiny import (
    ARCHITECTURES,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    build_tiny_model,
    build_word_tokenizer,
    text_words,
)

WORDS = CorridorEnv.vocabulary()


def test_tokenizer_vocabulary_is_specials_template_words_then_given_words() -> None:
    tokenizer = build_word_tokenizer(["East", "room", ".", "room", "3"])
    vocab = tokenizer.get_vocab()
    assert sorted(vocab, key=vocab.get) == [*SPECIAL_TOKENS, "system", "user", "assistant", "east", "room", ".", "3"]
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token_id == 0


def test_tokenizer_splits_words_and_punctuation_and_maps_unknowns() -> None:
    tokenizer = build_word_tokenizer(WORDS)
    ids = tokenizer("Room 1 of 3. The exit is EAST!", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["room", "1", "of", "3", ".", "the", "exit", "is", "east", "<unk>"]
    assert tokenizer.decode(ids[:-1]) == "room 1 of 3 . the exit is east"


def test_chat_template_renders_known_tokens_only() -> None:
    tokenizer = build_word_tokenizer(WORDS)
    messages = [{"role": "system", "content": "you are out"}, {"role": "user", "content": "room 1 of 3 ."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens == [
        *(IM_START, "system", "you", "are", "out", IM_END),
        *(IM_START, "user", "room", "1", "of", "3", ".", IM_END),
        *(IM_START, "assistant"),
    ]


@pytest.mark.parametrize("word", ["east.", "two words", ""])
def test_tokenizer_rejects_words_that_are_not_one_piece(word: str) -> None:
    with pytest.raises(ValueError, match="single word-level piece"):
        build_word_tokenizer(["room", word])


def test_markup_tags_are_single_tokens_anywhere_and_decode_for_the_parser(tmp_path: Path) -> None:
    from agentpo.rollout.parsing import parse_think_action_tag

    words = text_words("<think> </think> <action> </action> go east")
    assert words == ["<think>", "</think>", "<action>", "</action>", "go", "east"]
    tokenizer = build_word_tokenizer(words)
    tokenizer.save_pretrained(tmp_path)
    for loaded in (tokenizer, AutoTokenizer.from_pretrained(tmp_path)):
        ids = loaded("<THINK>go</think><action>go east</action> <actions>", add_special_tokens=False)["input_ids"]
        tokens = loaded.convert_ids_to_tokens(ids)
        assert tokens == ["<think>", "go", "</think>", "<action>", "go", "east", "</action>", "<unk>", "<unk>", "<unk>"]
        assert parse_think_action_tag(loaded.decode(ids[:-3])) == "go east"


def test_text_words_splits_like_the_tokenizer() -> None:
    tokenizer = build_word_tokenizer(text_words("You see a desk 1, <action>look</action>!"))
    text = "you see a desk 1 , <action> look </action> !"
    assert tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"]) == text_words(text)
    assert tokenizer.unk_token_id not in tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_build_reloads_identically_with_auto_classes(tmp_path: Path, arch: str) -> None:
    path = build_tiny_model(tmp_path / arch, WORDS, hidden_size=32, num_layers=1, num_heads=2, seed=3, arch=arch)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    fresh = build_word_tokenizer(WORDS)
    assert tokenizer.get_vocab() == fresh.get_vocab()
    text = "room 2 of 3 . the exit is west ."
    assert tokenizer(text)["input_ids"] == fresh(text)["input_ids"]
    assert tokenizer.chat_template == fresh.chat_template
    assert model.config.vocab_size == len(tokenizer) and model.config.model_type == arch
    saved = load_file(str(path / "model.safetensors"))
    state = model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        return load_file(
            str(build_tiny_model(tmp_path / name, WORDS, hidden_size=32, num_layers=1, seed=seed) / "model.safetensors")
        )

    first, again, other = weights("a", 7), weights("b", 7), weights("c", 8)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_build_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", WORDS, hidden_size=32, num_layers=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "qwen2"}, "unknown arch"),
        ({"hidden_size": 30, "num_heads": 4}, "divisible"),
        ({"num_layers": 0}, "positive"),
    ],
)
def test_bad_sizes_and_arch_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_tiny_model(tmp_path / "m", WORDS, **kwargs)


def test_tiny_model_for_an_env_without_a_vocabulary_is_refused_at_config_time() -> None:
    from agentpo.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=re.escape("model.source: tiny builds its tokenizer from the env's words")):
        config_from_dict({"model": {"source": "tiny"}, "env": {"id": "agentpo/Math-v0"}, "eval": {"tasks": 0}})


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_kv_cache_goes_in_and_out_under_the_name_this_transformers_uses(tmp_path: Path, arch: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(
        build_tiny_model(tmp_path / arch, WORDS, hidden_size=32, num_layers=1, num_heads=2, arch=arch)
    )
    assert CACHE_KEY in inspect.signature(model.forward).parameters
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        whole = model(input_ids=ids).logits[:, -1]
        prefix = model(input_ids=ids[:, :3], use_cache=True)
        step = model(input_ids=ids[:, 3:], use_cache=True, **cache_kwargs(output_cache(prefix))).logits[:, -1]
    torch.testing.assert_close(step, whole)
