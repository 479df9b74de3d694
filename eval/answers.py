"""Answer eval: the router off vs on over the QA set — retrieval, answers, and their difference.

Every question goes through the app's own pipeline (`app.pipeline.Pipeline`: route → filter →
retrieve → answer → grounding check), the code `app ask` runs; nothing here re-implements a step.
Retrieval metrics (hit@k, MRR) are over answerable questions; category precision (share of the
retrieved chunks in the gold category) and the widened rate over all. With an answerer, each arm
also answers: keyword coverage and citation precision on answerable questions, refusal accuracy
on unanswerable ones, the unsupported rate (answers with a sentence whose facts the cited notes do
not state), citations removed (to notes that were not retrieved) and the answer length. Every
question and arm is kept as a record (question, route, filter, sources, answer, grounding, keyword
hits) so a person can read what the system said.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from core.schemas import QAItem
from core.settings import Settings
from eval import metrics

if TYPE_CHECKING:
    from app.pipeline import Answer

KS = (1, 3, 5)
CITATION = re.compile(r"\[([a-z0-9_]+-[a-z0-9_-]+)\]")
# How an answer says the notes do not cover the question (the answer prompt asks for this plainly).
REFUSAL = re.compile(
    r"notes (do not|don't|does not|doesn't) (say|cover|mention)|not (in|covered by) the notes|no note"
    r"|(do not|don't) have (any )?(information|notes)|(cannot|can't) find|not mentioned",
    re.IGNORECASE,
)
STAGES = ("route", "retrieve", "answer", "total")


@dataclass
class ItemResult:
    """One question in one arm: what the pipeline returned, and the scores read off it."""

    item: QAItem
    result: Answer
    answered: bool

    @property
    def ranked(self) -> list[str]:
        return list(dict.fromkeys(c.note_id for c in self.result.chunks))

    @property
    def category_precision(self) -> float:
        chunks = self.result.chunks
        return sum(c.category == self.item.category for c in chunks) / len(chunks) if chunks else 0.0

    @property
    def answer(self) -> str | None:
        return self.result.text if self.answered else None

    @property
    def route_category(self) -> str | None:
        return self.result.route.category

    @property
    def timings(self) -> dict[str, float]:
        return self.result.timings

    def hit(self, k: int) -> float:
        return metrics.hit_at_k(self.ranked, self.item.gold_note_ids, k)

    def citation_precision(self) -> float | None:
        cited = set(CITATION.findall(self.answer or ""))
        if not cited:
            return None
        good = cited & set(self.ranked) & set(self.item.gold_note_ids)
        return len(good) / len(cited)

    def refused(self) -> bool:
        return bool(REFUSAL.search(self.answer or ""))

    def unsupported(self) -> bool:
        grounding = self.result.grounding
        return bool(grounding and grounding.unsupported)

    def record(self, arm: str) -> dict[str, Any]:
        """What a person reads: the question, what the app did, what it said, how it scored."""
        r = self.result
        out: dict[str, Any] = {
            "arm": arm,
            "question": self.item.question,
            "category": self.item.category,
            "answerable": self.item.answerable,
            "gold": list(self.item.gold_note_ids),
            "route": {
                "category": r.route.category,
                "confidence": round(r.route.confidence, 4),
                "backend": r.route.backend,
            },
            "filter": r.where,
            "widened": r.widened,
            "sources": [s.note_id for s in r.sources],
            "timings_ms": r.timings,
        }
        if self.answered:
            out |= {
                "answerer": f"{r.answerer.name}:{r.answerer.model}",
                "answer": r.text,
                "grounding": r.grounding.to_json() if r.grounding else None,
                "keyword_hits": [k for k in self.item.keywords if metrics.keyword_pattern(k).search(r.text)],
                "keywords": list(self.item.keywords),
                "refused": self.refused(),
            }
        return out


@dataclass
class ArmResult:
    name: str
    items: list[ItemResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        answerable = [r for r in self.items if r.item.answerable]
        unanswerable = [r for r in self.items if not r.item.answerable]
        mean = _mean
        answered = [r for r in self.items if r.answered]
        citations = [c for r in answerable if r.answered and (c := r.citation_precision()) is not None]
        return {
            "hit_at_k": {str(k): mean([r.hit(k) for r in answerable]) for k in KS},
            "mrr": mean([metrics.reciprocal_rank(r.ranked, r.item.gold_note_ids) for r in answerable]),
            "category_precision": mean([r.category_precision for r in self.items]),
            "widened_rate": mean([float(r.result.widened) for r in self.items]),
            "keyword_coverage": mean([metrics.keyword_coverage(r.answer or "", r.item.keywords) for r in answerable])
            if answered
            else None,
            "citation_precision": (mean(citations) if citations else 0.0) if answered else None,
            "refusal_accuracy": mean([float(r.refused()) for r in unanswerable]) if answered and unanswerable else None,
            "false_refusal_rate": mean([float(r.refused()) for r in answerable]) if answered and answerable else None,
            "unsupported_rate": mean([float(r.unsupported()) for r in answered]) if answered else None,
            "removed_citations": sum(len(r.result.grounding.removed_citations) for r in answered if r.result.grounding)
            if answered
            else None,
            "answer_chars_p50": metrics.percentile([len(r.answer or "") for r in answered], 50) if answered else None,
            "latency_ms": {
                stage: {"p50": metrics.percentile(v, 50), "p95": metrics.percentile(v, 95)}
                for stage in STAGES
                if (v := [r.timings[stage] for r in self.items if stage in r.timings])
            },
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_arms(
    settings: Settings, items: list[QAItem], arms: list[str], answerer_name: str, k: int, backend: str
) -> dict[str, ArmResult]:
    """Ask every QA item in every arm through the app's pipeline (`none`: stop after retrieval)."""
    from tqdm import tqdm

    from app.pipeline import Pipeline

    answering = answerer_name != "none"
    # With `none` the pipeline still loads an answerer (the light extractive one) but never calls it.
    chosen = replace(settings, answerer=answerer_name if answering else "extractive", router_backend=backend)
    pipeline = Pipeline.load(chosen, k=k, routing="on" in arms, warm=True)
    if answering and pipeline.answerer.note:
        print(f"note: answering with {pipeline.answerer.label}: {pipeline.answerer.note}", file=sys.stderr)
    results = {arm: ArmResult(arm) for arm in arms}
    bar = tqdm(total=len(items) * len(arms), desc="answers", file=sys.stderr, disable=not sys.stderr.isatty())
    for item in items:
        for arm in arms:
            if answering:
                answer = pipeline.ask(item.question, routing=arm == "on")
            else:  # the pipeline's first answer: routed and retrieved, nothing written yet
                stream = pipeline.stream(item.question, routing=arm == "on")
                answer = next(stream)
                stream.close()
            results[arm].items.append(ItemResult(item, answer, answering))
            bar.update()
    bar.close()
    return results


def compare(off: ArmResult, on: ArmResult) -> dict[str, Any]:
    """Paired off→on differences with bootstrap intervals, per category, and where routing helped or hurt."""
    pairs = [(a, b) for a, b in zip(off.items, on.items, strict=True) if a.item.answerable]
    out: dict[str, Any] = {
        "hit_at_3": metrics.paired_bootstrap([a.hit(3) for a, _ in pairs], [b.hit(3) for _, b in pairs])
    }
    if all(a.answer is not None for a, _ in pairs) and pairs:
        out["keyword_coverage"] = metrics.paired_bootstrap(
            [metrics.keyword_coverage(a.answer or "", a.item.keywords) for a, _ in pairs],
            [metrics.keyword_coverage(b.answer or "", b.item.keywords) for _, b in pairs],
        )
    per_category: dict[str, dict[str, float]] = {}
    for category in sorted({a.item.category for a, _ in pairs}):
        chosen = [(a, b) for a, b in pairs if a.item.category == category]
        per_category[category] = {
            "n": len(chosen),
            "off": _mean([a.hit(3) for a, _ in chosen]),
            "on": _mean([b.hit(3) for _, b in chosen]),
        }
    out["per_category_hit_at_3"] = per_category

    def row(a: ItemResult, b: ItemResult) -> dict[str, Any]:
        return {
            "question": a.item.question,
            "category": a.item.category,
            "routed_to": b.route_category,
            "off_top3": a.ranked[:3],
            "on_top3": b.ranked[:3],
            "gold": list(a.item.gold_note_ids),
        }

    out["helped"] = [row(a, b) for a, b in pairs if b.hit(3) > a.hit(3)]
    out["hurt"] = [row(a, b) for a, b in pairs if b.hit(3) < a.hit(3)]
    return out


def _count(value: Any) -> str:
    return "—" if value is None else f"{value:.0f}"


def markdown(
    n: int, summaries: dict[str, dict[str, Any]], difference: dict[str, Any], command: str, backend: str, answerer: str
) -> str:
    def fmt(value: Any) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = [
        f"# Answer eval — router off vs on ({n} questions)",
        "",
        f"`{command}`",
        "",
        f"Router for the `on` arm: `{backend}` (with its fallback). Answerer: `{answerer}`.",
        "",
        "| arm | hit@1 | hit@3 | hit@5 | MRR | category precision | widened | keyword coverage | citation precision "
        "| refusal accuracy | false refusals | unsupported rate | citations removed | answer chars p50 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in summaries.items():
        h = s["hit_at_k"]
        lines.append(
            f"| {arm} | {fmt(h['1'])} | {fmt(h['3'])} | {fmt(h['5'])} | {fmt(s['mrr'])} | "
            f"{fmt(s['category_precision'])} | {fmt(s['widened_rate'])} | {fmt(s['keyword_coverage'])} | "
            f"{fmt(s['citation_precision'])} | {fmt(s['refusal_accuracy'])} | {fmt(s['false_refusal_rate'])} | "
            f"{fmt(s['unsupported_rate'])} | {_count(s['removed_citations'])} | {_count(s['answer_chars_p50'])} |"
        )
    lines += ["", "Latency per stage (ms, p50 / p95):", ""]
    for arm, s in summaries.items():
        parts = [f"{stage} {v['p50']:.0f} / {v['p95']:.0f}" for stage, v in s["latency_ms"].items()]
        lines.append(f"- {arm}: " + ", ".join(parts))
    if difference:
        d = difference["hit_at_3"]
        lines += ["", f"**on − off, hit@3**: {d['mean']:+.3f} (95% bootstrap {d['lo']:+.3f} … {d['hi']:+.3f})"]
        if "keyword_coverage" in difference:
            d = difference["keyword_coverage"]
            lines.append(
                f"**on − off, keyword coverage**: {d['mean']:+.3f} (95% bootstrap {d['lo']:+.3f} … {d['hi']:+.3f})"
            )
        lines += ["", "| category | n | hit@3 off | hit@3 on |", "|---|---|---|---|"]
        for cat, v in difference["per_category_hit_at_3"].items():
            lines.append(f"| {cat} | {v['n']} | {v['off']:.2f} | {v['on']:.2f} |")
        for kind in ("helped", "hurt"):
            rows = difference[kind]
            lines += ["", f"## Where the router {kind} ({len(rows)})", ""]
            for r in rows[:40]:
                lines.append(
                    f"- {r['question']} — gold {r['gold']}, routed to {r['routed_to']}; "
                    f"off top-3 {r['off_top3']}, on top-3 {r['on_top3']}"
                )
    return "\n".join(lines) + "\n"
