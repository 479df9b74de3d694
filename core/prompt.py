"""The one router prompt. Fine-tuning, inference and eval all format questions here.

The fine-tuned prompt is short (one instruction line + the question): after training the model
knows the labels and every prompt token costs CPU time. The zero-shot baseline also lists every
label with its scope, since an untrained model has no other way to know them.

The question is the last thing before the chat template's tail, so everything before it is a
fixed prefix whose KV cache the `llm` router computes once.
"""

from __future__ import annotations

from typing import Any

from core.categories import LabelSet

INSTRUCTION = "Route the household question to a category label."


def system_text(labels: LabelSet, label_format: str, with_scopes: bool) -> str:
    """The system message: the instruction, plus the label list for the zero-shot baseline."""
    if not with_scopes:
        return INSTRUCTION
    lines = [INSTRUCTION, "Labels:"]
    for cat, label in zip(labels.categories, labels.labels(label_format), strict=True):
        lines.append(f"{label}: {cat.name} — {cat.scope}")
    return "\n".join(lines)


def messages(question: str, labels: LabelSet, label_format: str, with_scopes: bool = False) -> list[dict[str, str]]:
    """Chat messages for one question."""
    return [
        {"role": "system", "content": system_text(labels, label_format, with_scopes)},
        {"role": "user", "content": " ".join(question.split())},
    ]


def render(tokenizer: Any, msgs: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Apply the model's chat template; Qwen3's thinking is always disabled."""
    return str(
        tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False
        )
    )


MARK = "\x00QUESTION\x00"


def split_prompt(tokenizer: Any, labels: LabelSet, label_format: str, with_scopes: bool = False) -> tuple[str, str]:
    """The rendered prompt as (prefix, suffix template): prompt = prefix + question + suffix."""
    text = render(tokenizer, messages("x", labels, label_format, with_scopes)[:1] + [{"role": "user", "content": MARK}])
    prefix, _, suffix = text.partition(MARK)
    return prefix, suffix


def prompt_text(tokenizer: Any, question: str, labels: LabelSet, label_format: str, with_scopes: bool = False) -> str:
    """The full prompt string for one question (what training uses as `prompt`)."""
    prefix, suffix = split_prompt(tokenizer, labels, label_format, with_scopes)
    return prefix + " ".join(question.split()) + suffix


def completion_text(label: str, tokenizer: Any) -> str:
    """The training target: the label then the end-of-turn token."""
    eos = tokenizer.eos_token or ""
    return label + eos
