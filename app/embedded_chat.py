"""The embedded SmolLM2-135M as a LangChain chat model: the answerer when Ollama is not there.

It runs in process, needs no network and is small enough for a laptop CPU, so answers are short
and plain: it is labelled as the small fallback wherever it answers. Decoding is greedy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from core.models import SMOLLM2

# LangChain message types -> chat-template roles.
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class EmbeddedChatModel(BaseChatModel):
    """SmolLM2-135M-Instruct (or another local causal LM) behind LangChain's chat-model interface."""

    var_dir: Path
    base: str = SMOLLM2
    max_new_tokens: int = 200
    repetition_penalty: float = 1.15  # a 135M model loops on greedy decoding without it

    @property
    def _llm_type(self) -> str:
        return "housechat-embedded"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base": self.base, "max_new_tokens": self.max_new_tokens}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(chunk.text for chunk in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        from core.models import load_causal_lm

        model, tokenizer = load_causal_lm(self.base, self.var_dir)
        chat = [{"role": _ROLES.get(m.type, "user"), "content": m.text} for m in messages]
        inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        emitted = ""
        for piece in _generate_pieces(model, tokenizer, inputs, self.max_new_tokens, self.repetition_penalty):
            text = emitted + piece
            cut = _first_stop(text, stop or [])
            if cut is not None:
                piece = text[len(emitted) : cut]
            if piece:
                emitted += piece
                if run_manager:
                    run_manager.on_llm_new_token(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if cut is not None:
                return


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Where the earliest stop sequence starts in `text`, if any."""
    found = [text.find(s) for s in stop if s and s in text]
    return min(found) if found else None


def _generate_pieces(
    model: Any, tokenizer: Any, inputs: Any, max_new_tokens: int, repetition_penalty: float
) -> Iterator[str]:
    """Decoded text pieces as `generate` produces them (it runs in a thread; stopping early ends it)."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    class Cancelled(StoppingCriteria):
        def __init__(self, event: threading.Event) -> None:
            self.event = event

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return self.event.is_set()

    cancel = threading.Event()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=repetition_penalty,
                pad_token_id=tokenizer.eos_token_id,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([Cancelled(cancel)]),
            )
        except BaseException as exc:  # re-raised in the consumer; the streamer must still end
            failures.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        yield from (piece for piece in streamer if piece)
    finally:
        # A consumer that stops early (a stop sequence, a closed browser tab) frees the CPU at once.
        cancel.set()
        worker.join()
    if failures:
        raise failures[0]
