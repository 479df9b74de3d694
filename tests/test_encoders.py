"""The sentence encoders (core.encoders): the ONNX ones agree with sentence-transformers, and a store
built with one encoder refuses to be searched or written with another."""

from __future__ import annotations

import subprocess
import sys
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


def test_int8_recipe_is_exact_on_every_x86_cpu(tmp_path) -> None:
    """The int8 MatMul computes exactly what integer arithmetic says, even where products saturate.

    Without VNNI, ONNX Runtime adds pairs of uint8 x int8 products into int16 with saturation; with
    full-range weights these all-positive inputs overflow it (31% off on an AVX2 CPU), so vectors
    depended on the CPU. `_quantize` keeps weights in 7 bits, where a pair cannot overflow.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from core.encoders import _quantize

    rng = np.random.default_rng(0)
    k, n = 64, 8
    weights = rng.uniform(0.5, 1.0, size=(k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "one-matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "fp32.onnx")
    _quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", ffn_only=False)

    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "int8.onnx").graph.initializer}
    w_q, w_scale = stored["W_quantized"].astype(np.int64), stored["W_scale"]
    assert np.abs(w_q).max() <= 64  # 7-bit weights
    x = np.concatenate([rng.uniform(0.9, 1.0, size=(1, k - 1)), [[0.0]]], axis=1).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    # ONNX Runtime's DynamicQuantizeLinear: uint8, range widened to hold 0, round half to even.
    scale = np.float32((max(0.0, float(x.max())) - min(0.0, float(x.min()))) / 255)
    zero = int(np.clip(np.rint(-min(0.0, float(x.min())) / scale), 0, 255))
    x_q = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.int64)
    exact = ((x_q - zero) @ w_q).astype(np.float32) * scale * w_scale
    np.testing.assert_allclose(got, exact, rtol=1e-5)
    np.testing.assert_allclose(got, x @ weights, rtol=0.01)  # and close to the float MatMul

    # Quantizing leaves the root logger as it found it: in a fresh process (pytest gives the root
    # logger handlers of its own) it has no handler after, so bm25s's DEBUG logger stays quiet.
    script = (
        "import logging, sys; from pathlib import Path; from core.encoders import _quantize; "
        "_quantize(Path(sys.argv[1]), Path(sys.argv[2]), ffn_only=False); "
        "print(len(logging.getLogger().handlers))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "fp32.onnx"), str(tmp_path / "again.onnx")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "0", done.stderr
