"""The router: label scoring on a tiny Qwen3 and the embedded SmolLM2, backends, fallback, policy, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.categories import load_categories
from core.errors import HousechatError
from core.models import SMOLLM2, TINY_QWEN3, load_causal_lm
from core.schemas import read_routing_examples
from core.settings import from_env
from router.base import Route
from router.policy import AUTO_MODES, LIFT_OPEN_NOTES, SOFT_OPEN_NOTES, FilterPolicy, RetrievalPlan, tune

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"  # converted models are cached here between runs (git-ignored)
QUESTIONS = ["when was the pool heater serviced?", "wifi password for guests", "breaker for the garage"]


@pytest.fixture(scope="module")
def labels():
    return load_categories(ROOT / "data" / "categories.yaml")


@pytest.fixture(scope="module")
def tiny_qwen3():
    return load_causal_lm(TINY_QWEN3, VAR)


def test_qwen3_prompt_disables_thinking_and_codes_are_single_tokens(tiny_qwen3, labels) -> None:
    from router.llm import LabelScorer

    model, tokenizer = tiny_qwen3
    scorer = LabelScorer(model, tokenizer, labels, "codes")
    assert scorer.single_token
    assert scorer.suffix_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert scorer.prefix_text.startswith("<|im_start|>system\n")
    # The prefix/question split tokenizes exactly like the whole prompt (so the KV cache is valid).
    whole = tokenizer.encode(scorer.prefix_text + QUESTIONS[0] + scorer.suffix_text, add_special_tokens=False)
    assert whole == scorer.prefix_ids + scorer.question_ids(QUESTIONS[0])


def test_scores_cover_exactly_the_labels_and_sum_to_one(tiny_qwen3, labels) -> None:
    from router.llm import LabelScorer, LLMRouter

    model, tokenizer = tiny_qwen3
    router = LLMRouter(LabelScorer(model, tokenizer, labels, "codes"))
    routes = router.route_batch(QUESTIONS)
    for route in routes:
        assert set(route.scores) == set(labels.ids)
        assert sum(route.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert route.category in labels.ids and route.code == labels.by_id(route.category).code
        assert route.confidence == max(route.scores.values())
    # One at a time, batched, with and without the prefix cache: the same probabilities.
    single = router.route(QUESTIONS[1]).scores
    assert single == pytest.approx(routes[1].scores, abs=1e-5)
    uncached = LLMRouter(router.scorer, use_cache=False).route(QUESTIONS[1]).scores
    assert uncached == pytest.approx(single, abs=1e-5)


def test_multi_token_labels_are_scored_by_summed_log_prob(tiny_qwen3, labels) -> None:
    import torch

    from router.llm import LabelScorer

    model, tokenizer = tiny_qwen3
    scorer = LabelScorer(model, tokenizer, labels, "names")
    assert not scorer.single_token  # "water_heater" is several tokens
    probs = scorer.probabilities(QUESTIONS[:2])
    assert probs.shape == (2, 20) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Check one label's score by hand: full forward pass over prompt + label tokens.
    i = labels.ids.index("water_heater")
    ids = tokenizer.encode(scorer.prefix_text + QUESTIONS[0] + scorer.suffix_text, add_special_tokens=False)
    label = scorer.label_tokens[i]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids + label])).logits[0].float(), dim=-1)
    by_hand = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(label))
    assert float(scorer.log_scores(QUESTIONS[:1])[0, i]) == pytest.approx(by_hand, abs=1e-3)


def test_label_rows_and_int8_keep_the_whole_vocabulary_argmax(tiny_qwen3, labels) -> None:
    import copy

    import torch

    from router.llm import LabelScorer
    from router.quantize import OutlierSplitLinear, quantize_int8

    model, tokenizer = tiny_qwen3
    vocab = LabelScorer(model, tokenizer, labels, "codes", label_rows=False)
    rows = LabelScorer(model, tokenizer, labels, "codes")
    assert vocab.label_weight is None and rows.label_weight.shape == (20, model.config.hidden_size)
    # Reading only the labels' rows of the output layer gives the same probabilities.
    reference = vocab.probabilities(QUESTIONS)
    assert rows.probabilities(QUESTIONS) == pytest.approx(reference, abs=1e-5)
    # int8: every decoder linear layer quantized (down projections split around their outlier
    # channels), the output layer float, the winner unchanged.
    int8 = quantize_int8(LabelScorer(copy.deepcopy(model), tokenizer, labels, "codes"), outliers=4)
    decoder = int8.model.get_decoder()
    assert not any(isinstance(m, torch.nn.Linear) for m in decoder.modules())
    assert all(isinstance(layer.mlp.down_proj, OutlierSplitLinear) for layer in decoder.layers)
    assert all(len(layer.mlp.down_proj.outliers) == 4 for layer in decoder.layers)
    assert isinstance(int8.model.get_output_embeddings(), torch.nn.Linear)
    assert (int8.probabilities(QUESTIONS).argmax(axis=1) == reference.argmax(axis=1)).all()
    assert any(isinstance(m, torch.nn.Linear) for m in model.get_decoder().modules())  # the fixture's model untouched


def test_llm_int8_setting_reads_the_environment() -> None:
    assert from_env({}).llm_int8 is True
    assert from_env({"HOUSECHAT_LLM_INT8": "0"}).llm_int8 is False


def test_embedded_smollm2_scores_and_generates(labels) -> None:
    from router.llm import LabelScorer, LLMRouter

    model, tokenizer = load_causal_lm(SMOLLM2, VAR)
    scorer = LabelScorer(model, tokenizer, labels, "codes")
    assert scorer.single_token, "every code must be one SmolLM2 token"
    route = LLMRouter(scorer).route(QUESTIONS[0])
    assert set(route.scores) == set(labels.ids) and route.category in labels.ids
    generated = LLMRouter(scorer, "llm-generate", generate=True).route(QUESTIONS[0])
    assert generated.raw_output is not None
    # Without training the base model rarely names a valid code: the category is whatever the parser
    # makes of the text (None = invalid output), and only a parsed label gets a score.
    assert generated.category == scorer.parse(generated.raw_output)
    if generated.category is None:
        assert generated.scores == {} and generated.confidence == 0.0 and generated.code is None
    else:
        assert generated.scores == {generated.category: 1.0} and generated.code == labels.by_id(generated.category).code


def test_generate_mode_parsing(labels, tiny_qwen3) -> None:
    from router.llm import LabelScorer

    scorer = LabelScorer(*tiny_qwen3, labels, "codes")
    assert scorer.parse(" JV") == "pool" and scorer.parse("JV.") == "pool"
    assert scorer.parse("The pool") is None and scorer.parse("") is None and scorer.parse("jv") is None


def _route(scores: dict[str, float]) -> Route:
    best = max(scores, key=lambda c: scores[c])
    return Route(best, None, scores[best], scores, "test")


def test_filter_policy_single_pair_none() -> None:
    policy = FilterPolicy(single=0.6, pair=0.8)
    assert policy.where(_route({"pool": 0.9, "water_heater": 0.1})) == {"category": "pool"}
    assert policy.where(_route({"pool": 0.5, "water_heater": 0.4, "roof": 0.1})) == {
        "category": {"$in": ["pool", "water_heater"]}
    }
    assert policy.where(_route({"pool": 0.4, "water_heater": 0.3, "roof": 0.3})) is None
    assert policy.where(Route(None, None, 0.0, {}, "off")) is None


def test_filter_policy_plans_hard_soft_none_per_band() -> None:
    policy = FilterPolicy(single=0.6, pair=0.8)
    confident = _route({"pool": 0.9, "water_heater": 0.1})
    close = _route({"pool": 0.5, "water_heater": 0.4, "roof": 0.1})
    unsure = _route({"pool": 0.4, "water_heater": 0.3, "roof": 0.3})
    assert [policy.band(r) for r in (confident, close, unsure)] == ["single", "pair", "low"]
    # The default modes are the original policy: the same where as policy.where, hard where it filters.
    for route in (confident, close, unsure):
        plan = policy.plan(route)
        assert plan.where == policy.where(route) and plan.boost is None
        assert plan.mode == ("none" if plan.where is None else "hard")
    soft = policy.with_mode("soft", boost=0.2)
    plan = soft.plan(close)
    assert plan.mode == "soft" and plan.where == {"category": {"$in": ["pool", "water_heater"]}}
    assert plan.boost == pytest.approx({"pool": 0.1, "water_heater": 0.08, "roof": 0.02})
    assert plan.open_notes == SOFT_OPEN_NOTES > 0 and soft.with_mode("soft", open_notes=0).plan(close).open_notes == 0
    assert soft.plan(unsure).mode == "soft" and soft.plan(unsure).where is not None  # soft costs little: every band
    lift = policy.with_mode("lift").plan(close)
    assert (lift.mode, lift.where, lift.boost, lift.open_notes) == ("lift", plan.where, None, LIFT_OPEN_NOTES)
    assert policy.with_mode("none").plan(confident) == RetrievalPlan("none", "single")
    off = policy.with_mode("soft").plan(Route(None, None, 0.0, {}, "off"))
    assert off.mode == "none" and off.where is None and off.boost is None
    assert policy.with_mode("auto").modes == AUTO_MODES
    assert FilterPolicy.from_json(soft.to_json()) == policy  # meta.json keeps thresholds, not modes
    with pytest.raises(ValueError, match="filter mode"):
        policy.with_mode("sideways")


def test_tuning_prefers_no_filter_when_confident_routes_are_wrong() -> None:
    # Confident and right on two, confident and wrong on two: a high single threshold wins.
    routes = [
        _route({"a": 0.99, "b": 0.01}),
        _route({"a": 0.7, "b": 0.3}),
        _route({"b": 0.7, "a": 0.3}),
        _route({"b": 0.72, "a": 0.28}),
    ]
    policy, utility = tune(routes, ["a", "a", "a", "a"])
    assert policy.where(routes[0]) == {"category": "a"}
    assert policy.where(routes[2]) != {"category": "b"}  # never a confident wrong filter
    assert utility > 0.75


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory, labels) -> Path:
    from router.embedding import fit

    train, _ = read_routing_examples(ROOT / "data" / "routing" / "train.jsonl")
    val, _ = read_routing_examples(ROOT / "data" / "routing" / "val.jsonl")
    out = tmp_path_factory.mktemp("embedding")
    fit(train[:400], val[:100], labels, out, data_hash="test")
    return out


@pytest.mark.slow  # fits the embedding router
def test_embedding_router_fits_saves_and_loads(embedding_dir, labels) -> None:
    from router.embedding import EmbeddingRouter

    meta = json.loads((embedding_dir / "meta.json").read_text())
    assert meta["categories_hash"] == labels.fingerprint() and set(meta["thresholds"]) == {"single", "pair"}
    router = EmbeddingRouter.load(embedding_dir, labels)
    route = router.route("the hot tub heater shows a PS code")
    assert route.category in labels.ids and sum(route.scores.values()) == pytest.approx(1.0, abs=1e-5)
    val, _ = read_routing_examples(ROOT / "data" / "routing" / "val.jsonl")
    hits = sum(
        r.category == e.category for r, e in zip(router.route_batch([e.question for e in val]), val, strict=True)
    )
    assert hits / len(val) > 0.4  # far above the 5% of chance on 20 labels


@pytest.mark.slow  # fits the embedding router with n-grams
def test_embedding_router_with_char_ngrams_reloads_to_the_same_scores(labels, tmp_path) -> None:
    import numpy as np

    from router.embedding import EmbeddingRouter, fit

    train, _ = read_routing_examples(ROOT / "data" / "routing" / "train.jsonl")
    val, _ = read_routing_examples(ROOT / "data" / "routing" / "val.jsonl")
    meta = fit(train[:300], val[:60], labels, tmp_path / "chars", char_weights=(2.0,), extra=train[300:340])
    assert meta["char_weight"] == 2.0 and "char 2-5-gram" in meta["features"]
    assert (meta["metrics"]["n_train"], meta["metrics"]["n_extra"]) == (300, 40)  # extra examples train, not val
    router = EmbeddingRouter.load(tmp_path / "chars", labels)
    questions = [e.question for e in val[:60]]
    features = router.features(questions)
    assert features.shape[1] > 384 and np.abs(features[:, 384:]).sum() > 0  # the n-gram block is there
    hits = sum(r.category == e.category for r, e in zip(router.route_batch(questions), val[:60], strict=True))
    assert hits / 60 == pytest.approx(meta["metrics"]["val_accuracy"], abs=1e-4)  # saved vocab + idf reproduce the fit
    head = dict(np.load(tmp_path / "chars" / "head.npz"))
    head["char_vocab"] = head["char_vocab"][:-5]  # a vocabulary that no longer fits the coefficients
    np.savez(tmp_path / "chars" / "head.npz", **head)
    with pytest.raises(HousechatError, match="does not match its meta.json — refit it"):
        EmbeddingRouter.load(tmp_path / "chars", labels)


@pytest.mark.slow  # fits the embedding router with both n-gram blocks, twice
def test_word_ngrams_and_refit_on_val_reload_and_learn_the_val_questions(labels, tmp_path) -> None:
    import numpy as np

    from router.embedding import EmbeddingRouter, fit

    train, _ = read_routing_examples(ROOT / "data" / "routing" / "train.jsonl")
    val, _ = read_routing_examples(ROOT / "data" / "routing" / "val.jsonl")
    train, val = train[:300], val[:60]
    meta = fit(train, val, labels, tmp_path / "r", char_weights=(1.0,), word_weights=(1.0,), refit_on_val=True)
    assert meta["word_weight"] == 1.0 and "word 1-2-gram" in meta["features"] and meta["refit_on_val"] is True
    assert (meta["metrics"]["n_train"], meta["metrics"]["n_val_refit"]) == (300, 60)
    saved = np.load(tmp_path / "r" / "questions.npz")
    assert len(saved["texts"]) == 360 and str(saved["texts"][-1]) == val[-1].question  # adapt refits on both
    head = np.load(tmp_path / "r" / "head.npz")
    train_words = {w for e in train for w in e.question.lower().split()}
    val_only = {w.strip("?.,!'\"") for e in val for w in e.question.lower().split()} - train_words
    assert val_only & {str(w) for w in head["word_vocab"]}  # the refit vocabulary knows val's own words
    router = EmbeddingRouter.load(tmp_path / "r", labels)
    questions = [e.question for e in val]
    width = 384 + len(head["char_vocab"]) + len(head["word_vocab"])
    assert router.features(questions).shape == (60, width)
    hits = sum(r.category == e.category for r, e in zip(router.route_batch(questions), val, strict=True))
    assert hits / 60 >= meta["metrics"]["val_accuracy"]  # the refit head has learned val
    # Without the options nothing changes: no word block, no refit (the household's router as before).
    plain = fit(train, val, labels, tmp_path / "plain", char_weights=(1.0,))
    assert plain["word_weight"] == 0.0 and plain["refit_on_val"] is False and plain["metrics"]["n_val_refit"] == 0
    assert len(np.load(tmp_path / "plain" / "head.npz")["word_vocab"]) == 0
    assert plain["metrics"]["val_accuracy"] == meta["metrics"]["val_accuracy"] or meta["word_weight"]


@pytest.mark.slow  # fits the embedding router
def test_router_refuses_a_model_trained_on_other_categories(embedding_dir, labels, tmp_path) -> None:
    from router.embedding import EmbeddingRouter

    bad = tmp_path / "bad"
    shutil.copytree(embedding_dir, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["categories"][0]["code"] = "ZZ"
    meta["categories_hash"] = "0000"
    (bad / "meta.json").write_text(json.dumps(meta))
    # The fix named is the one that makes this kind of router (not `python -m finetune` training).
    with pytest.raises(
        HousechatError, match="trained on other categories .* remake it with `python -m finetune embedding`"
    ):
        EmbeddingRouter.load(bad, labels)


@pytest.mark.slow  # fits the embedding router
def test_fallback_llm_to_embedding_to_off(embedding_dir, tmp_path) -> None:
    from router.registry import load_router

    settings = from_env({}, router_model_dir=tmp_path / "missing", embedding_router_dir=embedding_dir, var_dir=VAR)
    loaded = load_router("llm", settings)
    route = loaded.router.route("pool pump noise")
    assert route.backend == "embedding" and "llm unavailable" in (route.fallback_reason or "")
    settings = from_env({}, router_model_dir=tmp_path / "missing", embedding_router_dir=tmp_path / "no", var_dir=VAR)
    route = load_router("llm", settings).router.route("pool pump noise")
    assert route.backend == "off" and route.category is None and "embedding unavailable" in route.fallback_reason
    with pytest.raises(HousechatError, match="no router model"):
        load_router("llm", settings, fallback=False)
    with pytest.raises(HousechatError, match="unknown router backend"):
        load_router("gpt", settings)


@pytest.mark.slow  # fits the embedding router
def test_cli_routes_and_lists(embedding_dir, capsys, monkeypatch) -> None:
    from router.cli import main

    monkeypatch.setenv("HOUSECHAT_EMBEDDING_ROUTER_DIR", str(embedding_dir))
    monkeypatch.setenv("HOUSECHAT_OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    assert main(["which breaker feeds the garage?", "--backend", "embedding", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "embedding" and len(out["top"]) == 3 and "filter" in out
    assert main(["--list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["off"]["available"] and listing["embedding"]["available"]
    assert not listing["ollama"]["available"] and "ollama serve" in listing["ollama"]["reason"]
    assert main(["x", "--backend", "nope"]) == 2  # choices come from the registry
    assert main(["x", "--backend", "ensemble", "--help"]) == 0
    assert "ensemble" in capsys.readouterr().out
    assert main([]) == 2  # neither a question nor --list: a usage error, returned (not raised)


@pytest.mark.slow  # fits the embedding router
def test_ollama_backend_against_a_loopback_server(ollama_fake, labels, embedding_dir, tmp_path) -> None:
    """The real `ollama` client: JSON-schema enum of codes, think off, temperature 0, log-probs → scores."""
    from core.settings import OLLAMA_ROUTER_MODEL
    from router.ollama_router import OllamaRouter
    from router.registry import load_router

    ollama_fake.models = [OLLAMA_ROUTER_MODEL]
    ollama_fake.choose = lambda values, request: "JV" if "JV" in values else values[0]
    router = OllamaRouter(ollama_fake.url, OLLAMA_ROUTER_MODEL, labels)
    router.check()
    route = router.route("the hot tub heater shows PS")
    assert route.category == "pool" and route.code == "JV" and route.backend == "ollama"
    assert set(route.scores) == set(labels.ids) and sum(route.scores.values()) == pytest.approx(1.0)
    sent = ollama_fake.chats()[-1]
    assert sent["think"] is False and sent["options"]["temperature"] == 0
    assert sorted(sent["format"]["properties"]["category"]["enum"]) == sorted(labels.codes)
    assert sent["messages"][0]["role"] == "system" and sent["messages"][-1]["content"] == "the hot tub heater shows PS"

    # Model missing: a clear error naming the fix; through the registry, a fallback to embedding.
    ollama_fake.models = ["qwen3:4b-instruct"]
    with pytest.raises(HousechatError, match="ollama create"):
        router.check()
    settings = from_env(
        {},
        ollama_host=ollama_fake.url,
        embedding_router_dir=embedding_dir,
        router_model_dir=tmp_path / "none",
        var_dir=VAR,
    )
    assert load_router("ollama", settings).router.route("x").backend == "embedding"

    # Thresholds come with the served model (exported into its GGUF), not from models/router-llm
    # (the installed LLM router there has other ones); a model without them gets the defaults.
    from router.ollama_router import POLICY_KEY
    from router.policy import FilterPolicy

    ollama_fake.models = [OLLAMA_ROUTER_MODEL]
    ollama_fake.model_info = {POLICY_KEY: json.dumps({"single": 0.7, "pair": 0.9})}
    installed = from_env({}, ollama_host=ollama_fake.url, embedding_router_dir=embedding_dir, var_dir=VAR)
    assert load_router("ollama", installed).policy == FilterPolicy(0.7, 0.9)
    ollama_fake.model_info = {}
    assert load_router("ollama", installed).policy == FilterPolicy()

    # Server goes down after loading: each question falls back and says why.
    loaded = load_router("ollama", settings)
    ollama_fake.stop()
    route = loaded.router.route("pool pump")
    assert route.backend == "embedding" and "not reachable" in route.fallback_reason


def test_ensemble_mix_and_weight_tuning(tmp_path, labels) -> None:
    from router.ensemble import fit_weight, mix

    a = {c: 0.0 for c in labels.ids} | {"pool": 0.7, "water_heater": 0.3}
    b = {c: 0.0 for c in labels.ids} | {"pool": 0.2, "water_heater": 0.8}
    assert mix(a, b, 1.0)["pool"] == pytest.approx(0.7, abs=1e-6)
    assert mix(a, b, 0.0)["water_heater"] == pytest.approx(0.8, abs=1e-6)
    assert sum(mix(a, b, 0.5).values()) == pytest.approx(1.0)
    # The llm is right on the first two, the embedding router on the third: a mix gets all three.
    llm = [_route(a), _route(a), _route({c: 0.0 for c in labels.ids} | {"pool": 0.55, "water_heater": 0.45})]
    emb = [_route(b | {"pool": 0.45, "water_heater": 0.55}), _route(b | {"pool": 0.4, "water_heater": 0.6}), _route(b)]
    meta = fit_weight(llm, emb, ["pool", "pool", "water_heater"], labels, tmp_path, {})
    assert meta["metrics"]["val_accuracy"] == 1.0 and 0.0 < meta["weight_llm"] < 1.0
    assert json.loads((tmp_path / "meta.json").read_text())["categories_hash"] == labels.fingerprint()


@pytest.mark.slow  # fits the embedding router
def test_store_vote_learns_a_new_households_vendor_after_ingest(embedding_dir, labels, tmp_path, write_note) -> None:
    """A vendor named only in a new household's notes: wrong before its notes are ingested, right after."""
    from ingest.cli import main as ingest_main
    from router.registry import load_router

    model = tmp_path / "router"
    shutil.copytree(embedding_dir, model)
    meta = json.loads((model / "meta.json").read_text())
    meta["vote_weight"] = 2.0
    (model / "meta.json").write_text(json.dumps(meta))
    store = tmp_path / "store"
    settings = from_env(store=store, embedding_router_dir=model)
    question = "has Quillmoor Brothers sent their invoice yet?"
    router = load_router("embedding", settings, labels).router
    before = router.route(question)  # no store yet: the head alone, which has never heard of Quillmoor
    assert router.describe() == "no store yet: the committed head alone"
    assert before.category != "roof"
    notes = tmp_path / "notes"
    write_note(
        notes,
        "roof-ridge",
        "roof",
        "Quillmoor Brothers re-bedded the ridge tiles and replaced 14 slates.\n"
        "Quillmoor Brothers invoice: $2,140, paid by cheque.",
        title="Ridge tiles re-bedded by Quillmoor Brothers",
    )
    write_note(notes, "garden-hedge", "garden", "Trimmed the beech hedge and mulched the roses.", title="Hedge")
    write_note(
        notes, "pool-pump", "pool", "The pool pump was primed and the skimmer basket cleaned.", title="Pool pump"
    )
    assert ingest_main(["--store", str(store), str(notes)]) == 0
    assert router.describe() == "the store changed: adapts on the next question"  # what the UI status line says
    after = router.route(question)  # the same router object: it opens the store once it exists
    assert after.category == "roof"
    assert after.scores["roof"] > before.scores["roof"]
    # It adapted to this store alone, recorded with the store's generation and counts.
    from router.adapt import adapted_dir

    adapted = json.loads((adapted_dir(settings) / "meta.json").read_text())
    assert adapted["store"]["notes"] == 3 and adapted["store"]["chunks"] == 3
    assert adapted["names"]["Quillmoor"] == adapted["names"]["Brothers"] == "roof"  # the household's names
    assert router.describe() == f"adapted to this store (3 notes, {adapted['metrics']['n_names']} names), current"
    other = from_env(store=tmp_path / "other-store", embedding_router_dir=model)
    assert adapted_dir(other) != adapted_dir(settings)  # store B never reads store A's head
    # A second ingest into the same store: the running router re-reads what was learned there.
    question = "did Vellacott leave the invoice?"
    before = router.route(question)
    write_note(notes, "pool-heater", "pool", "Vellacott serviced the pool heater. Vellacott invoice: $310.")
    assert ingest_main(["--store", str(store), str(notes)]) == 0
    after = router.route(question)
    assert after.category == "pool" and after.scores["pool"] > before.scores["pool"]
    assert json.loads((adapted_dir(settings) / "meta.json").read_text())["names"]["Vellacott"] == "pool"
    assert router.inner.names["vellacott"] == labels.ids.index("pool")  # in the running router, not only on disk
    from router.adapt import ADAPTED_VOTE_WEIGHT, status

    report = status(settings)  # what `python -m router --status` prints
    assert report["current"] is True and report["notes"] == 4
    assert "adapted to this store" in report["router"] and "names learned" in report["router"]
    assert report["vote"].endswith(f"weight {ADAPTED_VOTE_WEIGHT:g}")


@pytest.mark.slow  # ingests notes and fits the embedding router
def test_fit_tunes_the_store_vote_and_the_saved_router_reproduces_it(labels, tmp_path) -> None:
    """The vote's shape and weight are picked on val; loaded back with the same store, the router scores the same."""
    from ingest.cli import main as ingest_main
    from router.embedding import VOTE_SHAPES, fit
    from router.registry import load_router

    notes = sorted((ROOT / "data" / "notes").glob("*.md"))[::8]  # ~43 notes over every category
    folder = tmp_path / "notes"
    folder.mkdir()
    for path in notes:
        shutil.copy(path, folder / path.name)
    store = tmp_path / "store"
    assert ingest_main(["--store", str(store), str(folder)]) == 0
    settings = from_env(store=store, embedding_router_dir=tmp_path / "router")
    from core.store import open_store

    train, _ = read_routing_examples(ROOT / "data" / "routing" / "train.jsonl")
    val, _ = read_routing_examples(ROOT / "data" / "routing" / "val.jsonl")
    meta = fit(train[:300], val[:80], labels, tmp_path / "router", store=open_store(settings, create=False))
    assert (meta["vote_k"], meta["vote_power"]) in VOTE_SHAPES and meta["store"]["fingerprint"]
    assert meta["temperature"] > 0 and set(meta["thresholds"]) == {"single", "pair"}
    router = load_router("embedding", settings, labels).router  # the store holds the notes it learned: base head
    routes = router.route_batch([e.question for e in val[:80]])
    hits = sum(r.category == e.category for r, e in zip(routes, val[:80], strict=True))
    assert hits / 80 == pytest.approx(meta["metrics"]["val_accuracy"], abs=1e-4)


def test_a_router_that_votes_says_once_when_there_is_no_store_yet(labels, tmp_path, capsys) -> None:
    from router.registry import load_router

    settings = from_env(store=tmp_path / "not-ingested", var_dir=tmp_path / "var")
    router = load_router("embedding", settings, labels, fallback=False).router
    assert router.inner.vote_weight > 0  # the committed head mixes in the store vote
    router.route("the pool pump hums")
    router.route("the roof leaks")
    err = capsys.readouterr().err
    assert err.count("without the store vote") == 1 and str(tmp_path / "not-ingested") in err
    assert "python -m ingest" in err


def test_question_vote_favours_the_nearest_training_questions_category(labels, tmp_path) -> None:
    import numpy as np

    from benchmarks.routing_bm25_vote import question_vote

    pool, roof = labels.ids.index("pool"), labels.ids.index("roof")
    vectors = np.eye(4, 384, dtype=np.float16)  # four unit "questions": two pool, two roof
    np.savez(tmp_path / "questions.npz", texts=np.array(list("abcd")), categories=np.array(["pool", "pool", "roof", "roof"]), vectors=vectors)  # fmt: skip
    asked = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8]], dtype=np.float32)
    asked = np.hstack([asked, np.zeros((2, 380), dtype=np.float32)])
    votes = question_vote(tmp_path, asked, labels, k=2, power=1.0)
    assert votes.shape == (2, len(labels)) and np.allclose(votes.sum(axis=1), 1.0)
    assert votes[0].argmax() == pool and votes[1].argmax() == roof


def test_name_examples_keep_a_households_names_and_drop_common_and_spread_words() -> None:
    from router.adapt import name_examples

    texts = [
        "Ferraby sanded the oak. The floor is done.",
        "Ferraby came back to oil it; the NQ-45 dishwasher leaked onto it.",
        "Nkechi paid the pool man. the pump runs at night",
        "Nkechi booked the roofer",
        "Model NQ-45 drains slowly",
    ]
    categories = ["flooring", "flooring", "pool", "roof", "appliances"]
    names = dict(name_examples(texts, categories))
    assert names["Ferraby"] == "flooring"  # both mentions in flooring chunks
    assert "The" not in names and "Model" in names  # "the" is written in lower case too; "model" never is
    assert names["NQ-45"] in ("flooring", "appliances")  # a model number: one mention each, a tie at 0.5
    assert "NQ-45" not in dict(name_examples(texts, categories, share=0.6))  # spread: no clear category
    assert "Nkechi" not in dict(name_examples(texts, categories, share=0.6))  # the family's own names spread out


def test_name_mentions_count_a_households_names_in_any_case(labels) -> None:
    from router.embedding import name_mentions

    pool, roof = labels.ids.index("pool"), labels.ids.index("roof")
    names = {"vellacott": pool, "nq-45": pool, "quillmoor": roof}
    counts = name_mentions(
        ["Did VELLACOTT fix the NQ-45?", "quillmoor's bill", "the pool pump"], names, len(labels.ids)
    )
    assert counts.shape == (3, len(labels.ids))
    assert counts[0, pool] == 2 and counts[0].sum() == 2  # two names of one category, matched in any case
    assert counts[1, roof] == 1  # a possessive says the name too
    assert counts[2].sum() == 0
