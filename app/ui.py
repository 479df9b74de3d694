"""The Gradio UI: chat with route badges and sources, the router A/B switch, and a Compare tab.

The only module in the project that imports gradio. Note-derived text (answers quote notes, sources
show them) reaches the page only through `escape_text`: HTML and markdown in a note show as the
characters they are, never as images, links or forms; the only markup is the app's own
(citations, the highlighted sentence, the "not found in your notes" mark). Every answer is shown as messages: the text,
then a collapsible badge (category, confidence, router backend, latency; details inside), then
one collapsible message per source note. Histories live in each browser session (ChatInterface
state), so users never see each other's conversations; the shared `Pipeline` holds no chat state.
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.errors import HousechatError

if TYPE_CHECKING:
    from app.chain import Turn
    from app.pipeline import Answer, Pipeline, Status

EXAMPLES = [
    "When was the water heater last flushed?",
    "Which breaker feeds the garage subpanel?",
    "How many hours a day does the pool pump run in summer?",
]
ROUTER_SWITCH = ["on", "off"]


# -- turning Gradio's chat history into (role, text) turns ------------------------------------


def normalize_history(history: Any) -> list[Turn]:
    """The conversation as (role, text) turns, whatever shape Gradio hands it over in.

    The browser sends messages whose content is a list of parts (`[{"type": "text", "text": ...}]`),
    gradio_client sessions keep plain strings, and old-style histories are [user, assistant] pairs.
    Badges and sources (messages with a metadata title) are display only and are left out.
    """
    turns: list[Turn] = []
    for item in history or []:
        if isinstance(item, (list, tuple)) and len(item) == 2:  # [user, assistant] pairs
            turns += [
                (role, _text(content)) for role, content in zip(("user", "assistant"), item, strict=True) if content
            ]
            continue
        message = item if isinstance(item, dict) else getattr(item, "__dict__", {})
        metadata = message.get("metadata") or {}
        role, text = message.get("role"), _text(message.get("content"))
        text = plain_text(text) if role == "assistant" else text
        if role in ("user", "assistant") and text and not _get(metadata, "title"):
            turns.append((role, text))
    return turns


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "\n".join(t for t in (_text(part) for part in content) if t)
    if isinstance(content, dict):
        return str(content.get("text") or "") if content.get("type", "text") == "text" else ""
    return ""


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


# -- rendering an answer as chat messages ---------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>])")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~<>])")
_LINKABLE = re.compile(r"(?i)(://|www(?=\\?\.)|@)")
ZWSP = "\u200b"  # breaks autolinking of a URL in a note without changing what it reads
NOT_FOUND = " ⚠️ **not found in your notes**"


def escape_text(text: str) -> str:
    """Text from a note, safe in Gradio's markdown: shown as written, nothing rendered or fetched."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False).replace("&", "&amp;"))
    text = text.replace("&amp;lt;", "&lt;").replace("&amp;gt;", "&gt;").replace("&amp;amp;", "&amp;")
    return _LINKABLE.sub(lambda m: m.group(1)[0] + ZWSP + m.group(1)[1:], text)


def plain_text(markdown: str) -> str:
    """`escape_text` undone (and the app's marks dropped): what the model sees as history."""
    text = markdown.replace(NOT_FOUND, "").replace(ZWSP, "")
    return html.unescape(_ESCAPED.sub(r"\1", re.sub(r"`(\[[a-z0-9_-]+\])`", r"\1", text)))


def answer_markdown(answer: Answer) -> str:
    """The answer, escaped; citations in the app's markup; unsupported sentences marked."""
    from app.grounding import CITATION, sentences

    if not answer.text:
        return "_searching the notes and writing…_"
    unsupported = set(answer.grounding.unsupported) if answer.grounding else set()
    out = []
    for sentence in sentences(answer.text):
        pieces = CITATION.split(sentence)  # text, note id, text, note id, ...
        rendered = "".join(escape_text(p) if i % 2 == 0 else f" `[{p}]`" for i, p in enumerate(pieces))
        if CITATION.sub("", sentence).strip() in unsupported:
            rendered += NOT_FOUND
        out.append(rendered)
    return " ".join(out)


def source_markdown(answer: Answer, note_id: str, snippet: str, path: str) -> str:
    """A source's text: the sentence the answer cites from it highlighted in its context, else a preview."""
    from app.extractive import split_sentences, terms
    from app.grounding import CITATION, sentences

    citing = [CITATION.sub("", s) for s in sentences(answer.text) if f"[{note_id}]" in s]
    body = escape_text(snippet)
    if citing:
        note_sentences = [s.text for c in answer.chunks if c.note_id == note_id for s in split_sentences(c)]
        wanted = set(terms(" ".join(citing)))
        overlap = [len(wanted & set(terms(s))) for s in note_sentences]
        if overlap and max(overlap) > 0:
            i = overlap.index(max(overlap))
            before = escape_text(note_sentences[i - 1]) + " " if i > 0 else ""
            after = " " + escape_text(note_sentences[i + 1]) if i + 1 < len(note_sentences) else ""
            body = f"{before}<mark>{escape_text(note_sentences[i])}</mark>{after}"
    return f"{body}\n\n`[{note_id}]` · {escape_text(path)}"


def badge_title(answer: Answer) -> str:
    """The one-line route badge: category, confidence, router backend, latency."""
    route = answer.route
    if route.backend == "off":
        head = "Route: router off · all notes searched"
    else:
        head = f"Route: {route.category or 'no category'} · {route.confidence:.0%} · {route.backend} · {route.latency_ms:.0f} ms"
    if not answer.done:
        return head + " · writing the answer…"
    head += f" · answered by {answer.answerer.label} in {answer.timings['total'] / 1000:.1f} s"
    return head + " · " + grounding_verdict(answer)


def grounding_verdict(answer: Answer) -> str:
    """What the grounding check found, in a few words."""
    grounding = answer.grounding
    if grounding is None:
        return "not checked"
    if grounding.grounded:
        return "✓ grounded: every fact is in the cited notes"
    parts = []
    if grounding.unsupported:
        n = len(grounding.unsupported)
        parts.append(f"⚠ {n} sentence{'s' if n > 1 else ''} not found in your notes")
    if grounding.removed_citations:
        parts.append(f"{len(grounding.removed_citations)} citation(s) to unretrieved notes removed")
    return " · ".join(parts)


def badge_details(answer: Answer) -> str:
    """What is inside the badge: the filter, the top categories, who answered, stage timings."""
    route, lines = answer.route, []
    if answer.where is None:
        lines.append("**Filter:** none — every note was searched")
    elif answer.filter_mode == "soft":
        lines.append(f"**Filter:** soft `{json.dumps(answer.where)}` — these categories ranked up, every note searched")
    elif answer.filter_mode == "lift" and not answer.widened:
        lines.append(
            f"**Filter:** lift `{json.dumps(answer.where)}` — these categories' notes first, in the order of a search of every note"
        )
    else:
        lines.append(
            f"**Filter:** `{json.dumps(answer.where)}`"
            + (" — too few matches, so widened to all notes" if answer.widened else "")
        )
    if route.scores:
        lines.append("**Top categories:** " + ", ".join(f"{c} {p:.0%}" for c, p in route.top(3)))
    if route.fallback_reason:
        lines.append(f"**Router fallback:** {escape_text(route.fallback_reason)}")
    lines.append(f"**Answered by:** {escape_text(answer.answerer.label)}")
    if answer.answerer.note:
        lines.append(f"**Why not Ollama:** {escape_text(answer.answerer.note)}")
    if answer.done:
        lines.append(f"**Grounding:** {grounding_verdict(answer)}")
        if answer.grounding and answer.grounding.removed_citations:
            removed = ", ".join(f"`[{n}]`" for n in answer.grounding.removed_citations if re.fullmatch(r"[\w-]+", n))
            lines.append(f"**Removed citations:** {removed}")
    stages = ", ".join(f"{name} {ms:.0f} ms" for name, ms in answer.timings.items())
    lines.append(f"**Timings:** {stages}")
    return "\n\n".join(lines)


def answer_messages(answer: Answer) -> list[dict[str, Any]]:
    """The answer text, its badge and one message per source, as Gradio message dicts."""
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": answer_markdown(answer)}]
    messages.append(
        {
            "role": "assistant",
            "content": badge_details(answer),
            "metadata": {"title": badge_title(answer), "status": "done"},
        }
    )
    for source in answer.sources:
        when = f" · {source.date}" if source.date else ""
        messages.append(
            {
                "role": "assistant",
                "content": source_markdown(answer, source.note_id, source.snippet, source.path),
                "metadata": {
                    "title": f"Source: {escape_text(source.title)} · {source.category}{when} · score {source.score:.2f}",
                    "status": "done",
                },
            }
        )
    return messages


def status_markdown(status: Status) -> str:
    """The status line, with a banner when Qwen3-4B (Ollama) does not answer."""
    answerer = status.answerer
    router = status.router + (f" (fallback: {status.router_note})" if status.router_note else "")
    router += f" — {status.router_state}" if status.router_state else ""
    line = (
        f"**Answer model:** {answerer.label} · **Router:** {router} · "
        f"**Notes:** {status.notes} notes, {status.chunks} chunks in {status.store}"
    )
    why = escape_text(answerer.note or f"--answerer {answerer.name} was chosen")
    if answerer.name == "extractive":
        line = (
            "**Note: answers are sentences picked from your notes**, each with its note, not written by "
            f"Qwen3-4B: {why}.\n\n" + line
        )
    elif answerer.name != "ollama":
        line = (
            f"**Note: answers come from the small generative {answerer.model}**, not Qwen3-4B: {why}. "
            "Expect rough answers; facts not in your notes are flagged.\n\n" + line
        )
    return line


# -- the app --------------------------------------------------------------------------------------


def respond(
    pipeline: Pipeline, message: str, history: Any, router_switch: str, backend: str
) -> Iterator[list[dict[str, Any]]]:
    """The chat function: the answer's messages, re-sent as the text grows."""
    try:
        for answer in pipeline.stream(message, normalize_history(history), router_switch != "off", backend):
            yield answer_messages(answer)
    except HousechatError as exc:
        yield [{"role": "assistant", "content": f"**Error:** {exc}"}]


def compare(
    pipeline: Pipeline, question: str, backend: str
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """One question with the router off, then on: both columns' messages as they fill."""
    asked = [{"role": "user", "content": question}]
    off: list[dict[str, Any]] = asked
    try:
        for answer in pipeline.stream(question, routing=False):
            off = asked + answer_messages(answer)
            yield off, asked
        for answer in pipeline.stream(question, routing=True, backend=backend):
            yield off, asked + answer_messages(answer)
    except HousechatError as exc:
        yield off, asked + [{"role": "assistant", "content": f"**Error:** {exc}"}]


def build_ui(pipeline: Pipeline) -> Any:
    """The Gradio Blocks app for `pipeline` (not launched)."""
    import gradio as gr

    from router.registry import BACKENDS

    backends = [name for name in BACKENDS if name != "off"]
    default_backend = pipeline.settings.router_backend

    def chat_fn(message: str, history: Any, router_switch: str, backend: str) -> Iterator[list[dict[str, Any]]]:
        yield from respond(pipeline, message, history, router_switch, backend)

    def compare_fn(question: str, backend: str) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        yield from compare(pipeline, question, backend)

    def status_fn() -> str:
        try:
            return status_markdown(pipeline.status())
        except HousechatError as exc:  # e.g. the Chroma server went away: say so instead of a bare error
            return f"**Problem:** {exc}"

    with gr.Blocks(title="housechat", analytics_enabled=False) as demo:
        gr.Markdown("## housechat — answers from your house notes, with sources")
        status = gr.Markdown(status_fn())
        with gr.Tab("Chat"):
            gr.ChatInterface(
                chat_fn,
                chatbot=gr.Chatbot(height=560, label="housechat", buttons=["copy", "copy_all"]),
                additional_inputs=[
                    gr.Radio(ROUTER_SWITCH, value="on", label="Router (off: search every note)", render=False),
                    gr.Dropdown(backends, value=default_backend, label="Router backend", render=False),
                ],
                additional_inputs_accordion=gr.Accordion("Router", open=True, render=False),
                examples=[[q] for q in EXAMPLES],
                api_name="chat",
                fill_height=False,
            )
        with gr.Tab("Compare"):
            gr.Markdown(
                "One question answered twice: **router off** (all notes) and **router on** (filtered by category)."
            )
            with gr.Row():
                question = gr.Textbox(label="Question", placeholder=EXAMPLES[0], scale=4)
                backend = gr.Dropdown(backends, value=default_backend, label="Router backend", scale=1)
                ask = gr.Button("Compare", variant="primary", scale=1)
            with gr.Row():
                off_box = gr.Chatbot(label="Router off", height=520, buttons=["copy_all"])
                on_box = gr.Chatbot(label="Router on", height=520, buttons=["copy_all"])
            gr.on([ask.click, question.submit], compare_fn, [question, backend], [off_box, on_box], api_name="compare")
        demo.load(status_fn, None, status, api_name="status")
    return demo


def serve(
    pipeline: Pipeline,
    host: str,
    port: int,
    auth: tuple[str, str] | None = None,
    share: bool = False,
    block: bool = True,
) -> Any:
    """Serve the UI (127.0.0.1 unless told otherwise; no public link unless `share`).

    With `block=False` it returns the running app at once (tests call `.close()` on it).
    """
    demo = build_ui(pipeline)
    # Two answers at a time: a second user is not kept waiting, and two cores are not oversubscribed.
    demo.queue(default_concurrency_limit=2).launch(
        server_name=host, server_port=port, auth=auth, share=share, prevent_thread_lock=True, quiet=True
    )
    if block:
        print(f"housechat is running on {demo.local_url} — Ctrl+C to stop", file=sys.stderr, flush=True)
        demo.block_thread()
    return demo
