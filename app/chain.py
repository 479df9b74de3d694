"""The answer chain: a LangChain chat prompt | a chat model | a string parser.

The chat model is an *answerer*, picked by name from `ANSWERERS`:

- `ollama`: `ChatOllama` with the configured model (`qwen3:4b-instruct`), thinking off, temperature 0;
- `extractive`: the retrieved notes' own sentences that answer the question, each cited
  (`app.extractive`; no generation, in process, milliseconds) — the default without Ollama;
- `smollm2`: SmolLM2-135M generating in process (`app.embedded_chat`); only when asked for by name,
  because it invents facts (docs/results/answers.md).

`load_answerer(settings)` walks `CHOICES[settings.answerer]` and returns the first answerer that
can run, noting why the ones before it could not (the UI shows that note as a banner). Under
`auto` the Ollama answerer keeps the extractive one as its `fallback`: when Ollama goes away
between questions, `stream_answer` hands the question over instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.errors import HousechatError
from core.retrieval import RetrievedChunk
from core.settings import Settings

Turn = tuple[str, str]  # ("user" | "assistant", text): the chat history as the chain reads it

SYSTEM_PROMPT = """\
You are housechat, the assistant for one household's own house notes.
Answer only from the notes given with the question; do not use outside knowledge.
After each fact, cite the note it comes from by its id in square brackets, like [pool-pump-schedule].
If the notes do not cover the question, say plainly that the notes do not say, and stop.
Keep the answer short: a few sentences or a short list."""

QUESTION_TEMPLATE = """\
Notes:

{notes}

Question: {question}"""

DEFAULT_MAX_NEW_TOKENS = 200  # the embedded answerer's budget: a short answer in seconds on a CPU


@dataclass(frozen=True)
class Answerer:
    """A chat model that answers, with what the UI says about it.

    `note` says why this answerer answers instead of the one asked for (None when it is the one
    asked for). `fallback` takes over a question this one fails on before writing anything.
    """

    name: str  # "ollama" | "extractive" | "smollm2"
    model: str  # what answers, e.g. "qwen3:4b-instruct"
    chat_model: Any  # a LangChain BaseChatModel, or (`prompted=False`) a runnable over the chain inputs
    note: str | None = None
    fallback: Answerer | None = None
    failures: tuple[type[BaseException], ...] = ()  # the errors that hand a question to `fallback`
    fix: str = ""  # how to fix those errors
    prompted: bool = True  # False: `chat_model` reads the chunks itself (no prompt, no parser)

    @property
    def label(self) -> str:
        """How the UI names this answerer."""
        return LABELS.get(self.name, "{model}").format(model=self.model)

    def chain(self) -> Any:
        """prompt | chat model | parser, taking {"question", "notes", "history", "chunks", ...}."""
        if not self.prompted:
            return self.chat_model
        from langchain_core.output_parsers import StrOutputParser

        return answer_prompt() | self.chat_model | StrOutputParser()


LABELS = {
    "ollama": "Ollama {model}",
    "extractive": "sentences from your notes ({model})",
    "smollm2": "embedded {model} (small generative model)",
}


def answer_prompt() -> Any:
    """The chat prompt: the rules, the earlier turns, then this question with its notes."""
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

    return ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), MessagesPlaceholder("history"), ("human", QUESTION_TEMPLATE)]
    )


def format_notes(chunks: Sequence[RetrievedChunk]) -> str:
    """The retrieved chunks as the prompt shows them: `[note-id] title (category, date)` then the text."""
    if not chunks:
        return "(no notes matched this question)"
    blocks = []
    for chunk in chunks:
        when = f", {chunk.date}" if chunk.date else ""
        blocks.append(f"[{chunk.note_id}] {chunk.title} ({chunk.category}{when})\n{chunk.text.strip()}")
    return "\n\n".join(blocks)


def chain_inputs(
    question: str, chunks: Sequence[RetrievedChunk], history: Sequence[Turn], question_vector: Any = None
) -> dict[str, Any]:
    """The chain's input: the question, its notes, and the history as (role, text) messages.

    `chunks` and `question_vector` (the question's embedding, already computed for retrieval) are
    for answerers that read the notes themselves; the prompt ignores them.
    """
    roles = {"user": "human", "assistant": "ai"}
    return {
        "question": question,
        "notes": format_notes(chunks),
        "history": [(roles[role], text) for role, text in history if role in roles and text],
        "chunks": list(chunks),
        "question_vector": question_vector,
    }


def stream_answer(answerer: Answerer, inputs: dict[str, Any]) -> Iterator[tuple[Answerer, str]]:
    """Text pieces of the answer, each with the answerer that wrote it.

    When the answerer fails before writing anything and has a fallback, the fallback answers
    (its `note` then says why). A failure mid-answer is reported, never silently patched.
    """
    written = False
    try:
        for piece in answerer.chain().stream(inputs):
            written = True
            yield answerer, piece
    except answerer.failures as exc:
        if written or answerer.fallback is None:
            raise HousechatError(
                f"{answerer.label} failed while answering ({_describe(exc)}) — {answerer.fix}"
            ) from None
        fallback = replace(answerer.fallback, note=f"{answerer.label} failed ({_describe(exc)}) — {answerer.fix}")
        yield from stream_answer(fallback, inputs)


def _describe(exc: BaseException) -> str:
    return str(getattr(exc, "error", None) or exc) or exc.__class__.__name__


# -- the answerers --------------------------------------------------------------------------------


def _ollama(settings: Settings, max_new_tokens: int) -> Answerer:
    """ChatOllama on the configured answer model, after checking the server has that model.

    (`max_new_tokens` is the embedded model's budget; Qwen3 answers as briefly as the prompt asks.)
    """
    import httpx
    import ollama
    from langchain_ollama import ChatOllama

    host, model = settings.ollama_host, settings.answer_model
    try:
        tags = ollama.Client(host=host, timeout=5).list()
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
        # ollama's ConnectionError text is a generic "please check" paragraph; the host says more.
        detail = "" if isinstance(exc, ConnectionError) else f" ({_describe(exc)})"
        raise HousechatError(
            f"Ollama is not reachable at {host}{detail} — start it with `ollama serve`, "
            "or point HOUSECHAT_OLLAMA_HOST at a running server"
        ) from None
    names = {m.model for m in tags.models}
    if model not in names and f"{model}:latest" not in names:
        raise HousechatError(f"Ollama at {host} has no model {model!r} — run `ollama pull {model}`")
    chat_model = ChatOllama(model=model, base_url=host, reasoning=False, temperature=0)
    failures = (ConnectionError, httpx.HTTPError, ollama.ResponseError)
    return Answerer(
        "ollama", model, chat_model, failures=failures, fix=f"start Ollama (`ollama serve`) and `ollama pull {model}`"
    )


def _smollm2(settings: Settings, max_new_tokens: int) -> Answerer:
    """SmolLM2-135M generating in process (its weights are located now and loaded on first use)."""
    from app.embedded_chat import EmbeddedChatModel
    from core.models import smollm2_gguf_path

    smollm2_gguf_path()  # fail now, with the fix, rather than at the first question
    return Answerer(
        "smollm2", "SmolLM2-135M", EmbeddedChatModel(var_dir=settings.var_dir, max_new_tokens=max_new_tokens)
    )


_PICKER: Any = None  # one picker per process: its sentence-vector cache serves every question


def _extractive(settings: Settings, max_new_tokens: int) -> Answerer:
    """The sentence picker over the retrieved chunks (MiniLM, the model retrieval already loaded)."""
    global _PICKER
    from app.extractive import SentencePicker

    if _PICKER is None:
        _PICKER = SentencePicker()
    return Answerer("extractive", "MiniLM + BM25 sentence picker", _PICKER, prompted=False)


ANSWERERS: dict[str, Callable[[Settings, int], Answerer]] = {
    "ollama": _ollama,
    "extractive": _extractive,
    "smollm2": _smollm2,
}
CHOICES: dict[str, list[str]] = {
    "auto": ["ollama", "extractive"],
    "ollama": ["ollama"],
    "extractive": ["extractive"],
    "smollm2": ["smollm2"],
}


def load_answerer(settings: Settings, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Answerer:
    """The first answerer of `settings.answerer`'s choices that can run here.

    `auto` tries Ollama, then the extractive answerer (kept as the fallback for questions Ollama
    fails on); any other choice insists on that one and raises when it cannot run.
    """
    if settings.answerer not in CHOICES:
        raise HousechatError(f"unknown answerer {settings.answerer!r} — choose one of: {', '.join(CHOICES)}")
    ready: list[Answerer] = []
    skipped: list[str] = []  # why the answerers before the first ready one could not run
    for name in CHOICES[settings.answerer]:
        try:
            ready.append(ANSWERERS[name](settings, max_new_tokens))
        except HousechatError as exc:
            if not ready:
                skipped.append(str(exc))
    if not ready:
        raise HousechatError("; ".join(skipped))
    fallback = ready[1] if len(ready) > 1 else None
    return replace(ready[0], note="; ".join(skipped) or None, fallback=fallback)
