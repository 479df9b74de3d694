"""Answer eval: the router off vs on over the QA set — retrieval, answers, and their difference.

Retrieval metrics (hit@k, MRR) are over answerable questions; category precision (share of the
retrieved chunks in the gold category) and the widened rate over all. With an answerer, each arm
also answers: keyword coverage and citation precision on answerable questions, refusal accuracy
on unanswerable ones.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from core.schemas import QAItem
from core.settings import Settings
from eval import metrics

KS = (1, 3, 5)
CITATION = re.compile(r"\[([a-z0-9_]+-[a-z0-9_-]+)\]")
# How an answer says the notes do not cover the question (the answer prompt asks for this plainly).
REFUSAL = re.compile(
    r"notes (do not|don't|does not|doesn't) (say|cover|mention)|not (in|covered by) the notes|no note"
    r"|(do not|don't) have (any )?(information|notes)|(cannot|can't) find|not mentioned",
    re.IGNORECASE,
)


@dataclass
class ItemResult:
    item: QAItem
    ranked: list[str]
    category_precision: float
    widened: bool
    route_category: str | None
    timings: dict[str, float]
    answer: str | None = None

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


@dataclass
class ArmResult:
    name: str
    items: list[ItemResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        answerable = [r for r in self.items if r.item.answerable]
        unanswerable = [r for r in self.items if not r.item.answerable]
        mean = _mean
        answered = [r for r in self.items if r.answer is not None]
        citations = [c for r in answerable if r.answer is not None and (c := r.citation_precision()) is not None]
        return {
            "hit_at_k": {str(k): mean([r.hit(k) for r in answerable]) for k in KS},
            "mrr": mean([metrics.reciprocal_rank(r.ranked, r.item.gold_note_ids) for r in answerable]),
            "category_precision": mean([r.category_precision for r in self.items]),
            "widened_rate": mean([float(r.widened) for r in self.items]),
            "keyword_coverage": mean([metrics.keyword_coverage(r.answer or "", r.item.keywords) for r in answerable])
            if answered
            else None,
            "citation_precision": (mean(citations) if citations else 0.0) if answered else None,
            "refusal_accuracy": mean([float(r.refused()) for r in unanswerable]) if answered and unanswerable else None,
            "latency_ms": {
                stage: {"p50": metrics.percentile(v, 50), "p95": metrics.percentile(v, 95)}
                for stage in ("route", "retrieve", "generate")
                if (v := [r.timings[stage] for r in self.items if stage in r.timings])
            },
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_arms(
    settings: Settings, items: list[QAItem], arms: list[str], answerer_name: str, k: int, backend: str
) -> dict[str, ArmResult]:
    """Route (or not), retrieve and optionally answer every QA item in every arm."""
    from tqdm import tqdm

    from app.pipeline import plan_and_retrieve
    from core.store import open_store
    from router.registry import load_router

    store = open_store(settings, create=False)
    routers = {arm: load_router("off" if arm == "off" else backend, settings) for arm in arms}
    answerer = None
    if answerer_name != "none":
        from dataclasses import replace

        from app.chain import load_answerer

        answerer = load_answerer(replace(settings, answerer=answerer_name))
    results = {arm: ArmResult(arm) for arm in arms}
    bar = tqdm(total=len(items) * len(arms), desc="answers", file=sys.stderr, disable=not sys.stderr.isatty())
    for item in items:
        for arm in arms:
            loaded = routers[arm]
            t0 = time.perf_counter()
            route = loaded.router.route(item.question)
            policy = loaded.policy.with_mode(settings.filter_mode)
            t1 = time.perf_counter()
            _, found = plan_and_retrieve(store, item.question, route, policy, k, settings.hybrid)
            t2 = time.perf_counter()
            in_gold = [c.category == item.category for c in found.chunks]
            result = ItemResult(
                item,
                found.note_ids,
                sum(in_gold) / len(in_gold) if in_gold else 0.0,
                found.widened,
                route.category,
                {"route": (t1 - t0) * 1000, "retrieve": (t2 - t1) * 1000},
            )
            if answerer is not None:
                from app.chain import chain_inputs, stream_answer

                text = "".join(
                    piece for _, piece in stream_answer(answerer, chain_inputs(item.question, found.chunks, []))
                )
                result.answer = text.strip()
                result.timings["generate"] = (time.perf_counter() - t2) * 1000
            results[arm].items.append(result)
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
        "| arm | hit@1 | hit@3 | hit@5 | MRR | category precision | widened | keyword coverage | citation precision | refusal accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in summaries.items():
        h = s["hit_at_k"]
        lines.append(
            f"| {arm} | {fmt(h['1'])} | {fmt(h['3'])} | {fmt(h['5'])} | {fmt(s['mrr'])} | "
            f"{fmt(s['category_precision'])} | {fmt(s['widened_rate'])} | {fmt(s['keyword_coverage'])} | "
            f"{fmt(s['citation_precision'])} | {fmt(s['refusal_accuracy'])} |"
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
