"""The `ollama` router: the exported fine-tuned router model served by Ollama.

Output is constrained by a JSON schema whose enum is the label codes, thinking is off and the
temperature 0. Confidence comes from the token log-probs when the server returns them. The filter
thresholds travel inside the exported GGUF (`POLICY_KEY`), so they belong to the model Ollama
serves, not to whichever adapter happens to be installed locally.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from core import prompt
from core.categories import LabelSet
from core.errors import HousechatError
from router.base import Route
from router.meta import MAKE_OLLAMA
from router.policy import FilterPolicy

POLICY_KEY = "housechat.filter_policy"  # GGUF key/value: the thresholds as JSON (finetune export writes it)
CATEGORIES_KEY = "housechat.categories"  # GGUF key/value: [[id, code], ...] the model was trained on


class OllamaRouter:
    name = "ollama"

    def __init__(
        self, host: str, model: str, labels: LabelSet, label_format: str = "codes", timeout: float = 30.0
    ) -> None:
        import ollama

        self.client = ollama.Client(host=host, timeout=timeout)
        self.host, self.model, self.labels, self.label_format = host, model, labels, label_format
        self.label_strings = labels.labels(label_format)
        self.schema = {
            "type": "object",
            "properties": {"category": {"type": "string", "enum": self.label_strings}},
            "required": ["category"],
        }

    def check(self) -> None:
        """Raise HousechatError when the server is down or the model is not pulled/created."""
        import httpx

        try:
            tags = self.client.list()
        except (ConnectionError, httpx.HTTPError) as exc:
            raise HousechatError(
                f"Ollama is not reachable at {self.host} ({exc}) — start it with `ollama serve`"
            ) from None
        names = {m.model for m in tags.models}
        if self.model not in names and f"{self.model}:latest" not in names:
            raise HousechatError(
                f"Ollama has no model {self.model!r} — export the router (`python -m finetune export RUN --ollama`) "
                "and run the `ollama create` line it prints"
            )

    def _model_info(self) -> dict[str, Any]:
        """The served model's GGUF key/values (`ollama show`)."""
        import httpx
        import ollama

        try:
            return dict(self.client.show(self.model).modelinfo or {})
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
            raise HousechatError(f"Ollama could not describe {self.model!r} ({exc}) — is `ollama serve` up?") from None

    def check_labels(self) -> None:
        """Refuse a served model trained on other categories (its codes would mean other things).

        The export writes the label set into the GGUF (`CATEGORIES_KEY`); a model exported before
        that carries none and is taken as it is.
        """
        raw = self._model_info().get(CATEGORIES_KEY)
        if raw is None:
            return
        try:
            theirs = {str(i): str(c) for i, c in json.loads(raw)}
        except (json.JSONDecodeError, TypeError, ValueError):
            theirs = {}
        ours = {c.id: c.code for c in self.labels.categories}
        if theirs != ours:
            diff = sorted(set(theirs.items()) ^ set(ours.items()))
            raise HousechatError(
                f"Ollama model {self.model!r} was trained on other categories than {self.labels.source} "
                f"(differences: {diff[:6]}) — remake it with `{MAKE_OLLAMA}` and the "
                "`ollama create` line that prints, or point "
                "HOUSECHAT_CATEGORIES_FILE at the categories it was trained on"
            )

    def policy(self) -> FilterPolicy:
        """The thresholds the exported model carries (`ollama show`); the defaults when it has none."""
        raw = self._model_info().get(POLICY_KEY)
        try:
            return FilterPolicy.from_json(json.loads(raw)) if raw else FilterPolicy()
        except (json.JSONDecodeError, TypeError, ValueError):
            raise HousechatError(
                f"{self.model!r}: unreadable {POLICY_KEY} {raw!r} — export the router again and `ollama create` it"
            ) from None

    def route(self, question: str) -> Route:
        import ollama

        start = time.perf_counter()
        msgs = prompt.messages(question, self.labels, self.label_format)
        try:
            response = self.client.chat(
                model=self.model,
                messages=msgs,
                format=self.schema,
                think=False,
                options={"temperature": 0},
                logprobs=True,
                top_logprobs=5,
            )
        except ConnectionError as exc:
            raise HousechatError(
                f"Ollama is not reachable at {self.host} ({exc}) — start it with `ollama serve`"
            ) from None
        except ollama.ResponseError as exc:
            raise HousechatError(
                f"Ollama refused the router model {self.model!r}: {exc.error} — create it first"
            ) from None
        ms = (time.perf_counter() - start) * 1000
        content = response.message.content or ""
        try:
            label = json.loads(content).get("category")
        except (json.JSONDecodeError, AttributeError):
            label = None
        category = self._category(label)
        scores = self._scores(response.logprobs, category)
        code = self.labels.by_id(category).code if category else None
        confidence = scores.get(category, 0.0) if category else 0.0
        return Route(category, code, confidence, scores, self.name, ms, raw_output=content)

    def route_batch(self, questions: list[str]) -> list[Route]:
        return [self.route(q) for q in questions]

    def _category(self, label: Any) -> str | None:
        for cat, text in zip(self.labels.categories, self.label_strings, strict=True):
            if label == text:
                return cat.id
        return None

    def _scores(self, logprobs: Any, category: str | None) -> dict[str, float]:
        """Probabilities over labels from the top log-probs at the label's token, when given."""
        by_label = dict(zip(self.label_strings, self.labels.ids, strict=True))
        for entry in logprobs or []:
            candidates = [(entry.token, entry.logprob)] + [(t.token, t.logprob) for t in entry.top_logprobs or []]
            found = {by_label[t.strip()]: lp for t, lp in candidates if t.strip() in by_label}
            if found:
                top = max(found.values())
                weights = {c: math.exp(lp - top) for c, lp in found.items()}
                total = sum(weights.values())
                return {c: weights.get(c, 0.0) / total for c in self.labels.ids}
        # No log-probs from the server: all mass on the answer (confidence is then not informative).
        return {c: float(c == category) for c in self.labels.ids} if category else {}
