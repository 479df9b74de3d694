"""The sentence encoders (core.encoders): the ONNX ones agree with sentence-transformers, and a store
built with one encoder refuses to be searched or written with another."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.encoders import ENCODER_SPECS, encoder_for_model
from core.errors import HousechatError
from core.models import MINILM, embed
from core.settings import ENCODERS, PROJECT_ROOT, from_env
from core.store import open_store
from ingest import cli

TEXTS = [
    "When was the water heater last flushed?",
    "The breaker for the garage circuit is number 14 in the basement panel.",
    "Pool heater shows error E3: check the flow switch before calling Tidewell Pros.",
    "Wo ist der Hauptwasserhahn?",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_encoders_match_sentence_transformers() -> None:
    reference = embed(TEXTS, encoder="minilm")
    onnx = embed(TEXTS, encoder="minilm-onnx")
    assert onnx.shape == reference.shape == (len(TEXTS), 384) and onnx.dtype == np.float32
    assert cosines(onnx, reference).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-4)
    for name in ("minilm-int8", "minilm-int8-ffn"):  # close, not equal: the gate is measured in benchmarks/
        assert cosines(embed(TEXTS, encoder=name), reference).min() >= 0.98, name
    # a text's vector does not depend on the texts embedded with it (int8 scales activations per run)
    for name in ("minilm-onnx", "minilm-int8"):
        together = embed(TEXTS, encoder=name)
        alone = np.vstack([embed([text], encoder=name) for text in TEXTS])
        assert cosines(alone, together).min() >= 0.9999, name


def test_every_encoder_setting_has_its_own_model_id() -> None:
    assert set(ENCODERS) == set(ENCODER_SPECS)
    ids = [spec.model_id for spec in ENCODER_SPECS.values()]
    assert len(set(ids)) == len(ids) and ENCODER_SPECS["minilm"].model_id == MINILM  # old stores stay valid
    assert all(encoder_for_model(spec.model_id) == name for name, spec in ENCODER_SPECS.items())


def test_encoder_settings_are_checked() -> None:
    assert from_env({}).encoder == "minilm-int8"  # the default, by benchmarks/encoder.py
    assert from_env({"HOUSECHAT_ENCODER": "minilm-int8", "HOUSECHAT_ENCODER_THREADS": "2"}).encoder_threads == 2
    with pytest.raises(HousechatError, match="minilm-onnx"):
        from_env({"HOUSECHAT_ENCODER": "bert"})
    with pytest.raises(HousechatError, match="whole number"):
        from_env({"HOUSECHAT_ENCODER_THREADS": "two"})


def test_a_store_built_with_one_encoder_refuses_another(tmp_path: Path) -> None:
    settings = from_env(
        {},
        home=tmp_path,
        store=tmp_path / "store",
        categories_file=PROJECT_ROOT / "data" / "categories.yaml",
        encoder="minilm",
    )
    open_store(settings)  # built with `minilm`
    with pytest.raises(HousechatError) as refused:
        open_store(replace(settings, encoder="minilm-int8"), create=False)
    message = str(refused.value)
    assert "HOUSECHAT_ENCODER=minilm-int8 python -m ingest --rebuild" in message
    assert "HOUSECHAT_ENCODER=minilm)" in message  # or read it with the encoder that built it
    with pytest.raises(HousechatError, match="--rebuild"):
        open_store(replace(settings, encoder="minilm-onnx"))  # a writer is refused too


def test_ingest_rebuild_re_embeds_with_the_new_encoder(
    tmp_path: Path, write_note, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    notes, store = tmp_path / "notes", tmp_path / "store"
    write_note(notes, "water_heater-flush", "water_heater", "The water heater was flushed in October 2024.")
    write_note(notes, "pool-pump", "pool", "The pool pump runs 8 hours a day in summer.")
    monkeypatch.setenv("HOUSECHAT_ENCODER", "minilm")
    assert cli.main([str(notes), "--store", str(store)]) == 0
    monkeypatch.setenv("HOUSECHAT_ENCODER", "minilm-onnx")
    capsys.readouterr()
    assert cli.main([str(notes), "--store", str(store)]) == 1
    assert "HOUSECHAT_ENCODER=minilm-onnx python -m ingest --rebuild" in capsys.readouterr().err
    assert cli.main([str(notes), "--store", str(store), "--rebuild"]) == 0
    rebuilt = open_store(from_env(store=store), create=False)
    assert rebuilt.embedder.model == ENCODER_SPECS["minilm-onnx"].model_id
    assert rebuilt.counts() == (2, 2)
    hits = rebuilt.search(
        rebuilt.embed(["when was the water heater flushed"])[0], k=1, where={"category": "water_heater"}
    )
    assert [h.note_id for h in hits] == ["water_heater-flush"]


def test_rebuild_refuses_when_it_would_find_nothing_to_put_back(
    tmp_path: Path, write_note, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped path or a folder of broken notes must not cost the user their store."""
    notes, store = tmp_path / "notes", tmp_path / "store"
    write_note(notes, "pool-pump", "pool", "The pool pump runs 8 hours a day in summer.")
    assert cli.main([str(notes), "--store", str(store)]) == 0
    capsys.readouterr()
    assert cli.main([str(tmp_path / "nots"), "--store", str(store), "--rebuild"]) == 1
    assert "does not exist — the store was left as it is" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty"), "--store", str(store), "--rebuild"]) == 1
    assert "no valid notes" in capsys.readouterr().err
    assert open_store(from_env(store=store), create=False).counts() == (1, 1)
