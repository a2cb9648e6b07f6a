"""Tiny random-init causal LMs with a word-level tokenizer, built locally (no download).

A random-init model samples close to uniformly over its vocabulary, so a task is only learnable
from scratch when that vocabulary is small: the tokenizer here knows exactly the task's words plus
the few words of its chat template, and maps anything else to ``<unk>``. Markup tags such as
``<action>`` and ``</think>`` are single tokens, so a response decodes to text an action parser reads.

    path = build_tiny_model("runs/tiny", CorridorEnv.vocabulary())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
#: Chat markers in the ChatML layout that Qwen models use; ``<|im_end|>`` doubles as EOS so that a
#: model ends its turn the same way a chat model does.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, IM_START, IM_END)

#: The words the chat template itself writes (the message roles).
TEMPLATE_WORDS: tuple[str, ...] = ("system", "user", "assistant")

#: ChatML without newlines: the word-level pre-tokenizer drops whitespace anyway, so newlines would
#: not survive a round trip and only make rendered prompts differ from decoded ones.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    f"{IM_START}{{{{ message['role'] }}}} {{{{ message['content'] }}}}{IM_END}"
    "{% endfor %}"
    f"{{% if add_generation_prompt %}}{IM_START}assistant {{% endif %}}"
)

#: Architectures build_tiny_model knows, by transformers ``model_type``. Not "qwen2": transformers 5
#: forces its byte-level BPE ``Qwen2Tokenizer`` on any qwen2 folder and rebuilds this word-level
#: vocabulary into a wrong tokenizer. Llama is Qwen2 without the attention biases.
ARCHITECTURES: tuple[str, ...] = ("llama", "qwen3")

# A word is a run of letters/digits/underscore or a single punctuation character, so "east." and
# "east ." both give ["east", "."]; whitespace only separates.
_WORD_PATTERN = Regex(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+|[^\w\s]")
#: A markup tag (``<action>``, ``</think>``): one token, matched before the text is split into words.
TAG = re.compile(r"</?\w+>")


def text_words(text: str) -> list[str]:
    """The vocabulary pieces of ``text`` as the tokenizer splits it: tags whole, then words and punctuation.

    Lower-cased like the tokenizer's normalizer, so ``text_words(t)`` over every text a task shows
    is exactly the vocabulary that task needs.
    """
    words: list[str] = []
    position = 0
    lowered = text.lower()
    for tag in TAG.finditer(lowered):
        words += _WORD.findall(lowered[position : tag.start()])
        words.append(tag.group())
        position = tag.end()
    return words + _WORD.findall(lowered[position:])


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` plus the chat template's words, with a ChatML chat template.

    Text is lower-cased and split into words (runs of ``\\w``) and single punctuation characters;
    a piece outside the vocabulary becomes ``<unk>``. A word that is a markup tag (``<action>``,
    ``</think>``; see :data:`TAG`) is matched as one token wherever it appears, before that split.
    Decoding joins tokens with single spaces. Ids: the special tokens ``<pad>``, ``<unk>``,
    ``<|im_start|>``, ``<|im_end|>`` (EOS) first, then the template words, then ``words`` in the
    given order without repeats (case-folded). :func:`text_words` splits a text the same way.

    Raises:
        ValueError: a word is empty, contains whitespace, or would not survive pre-tokenization as
            one piece (e.g. ``"east."``), since it could then never be produced.
    """
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *TEMPLATE_WORDS, *(w.lower() for w in words)):
        vocab.setdefault(token, len(vocab))

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(_WORD_PATTERN, behavior="isolated")]
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tags = [word for word in vocab if TAG.fullmatch(word)]
    # Normalized (lower-cased) text is matched against the tags, which keep their vocabulary ids.
    tokenizer.add_tokens([AddedToken(tag, normalized=True) for tag in tags])

    for word in list(vocab)[len(SPECIAL_TOKENS) :]:
        pieces = [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(word)]
        if word not in tags and pieces != [word]:
            raise ValueError(
                f"vocabulary word {word!r} is not a single word-level piece (it splits into {pieces}) "
                f"nor a markup tag like <action>"
            )

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | Path,
    words: Iterable[str],
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    arch: str = "llama",
) -> Path:
    """Create a random-init causal LM over a word-level tokenizer and save both to ``out_dir``.

    The folder is a ``save_pretrained`` folder (safetensors) that ``AutoModelForCausalLM`` and
    ``AutoTokenizer.from_pretrained`` load; the same arguments give bit-identical weights. Input
    and output embeddings are tied (as in small Qwen models), the MLP is 4x ``hidden_size`` wide
    and every head has its own key/value head.

    Args:
        out_dir: folder to write (created if missing).
        words: the task's vocabulary, see :func:`build_word_tokenizer`.
        hidden_size: model width; a multiple of ``num_heads``.
        num_layers: transformer blocks.
        num_heads: attention heads.
        seed: torch seed for the random initialisation.
        arch: ``"llama"`` or ``"qwen3"`` (see :data:`ARCHITECTURES`).

    Returns:
        ``out_dir`` as a Path.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHITECTURES}")
    if hidden_size <= 0 or num_layers <= 0 or num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(
            f"need positive sizes with hidden_size divisible by num_heads, got hidden_size={hidden_size}, "
            f"num_layers={num_layers}, num_heads={num_heads}"
        )
    tokenizer = build_word_tokenizer(words)
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,  # qwen3 would default to 128 whatever the width
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
