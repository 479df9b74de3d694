"""Export a trained router: merge the adapter, save safetensors, write a GGUF and an Ollama Modelfile.

Ollama cannot import Qwen3 safetensors directly and its ADAPTER line is llama/gemma only, so we
write a full GGUF with the `gguf` package: F32 tensors (exact: loaded back by transformers, the
logits match the merged model), hyper-parameters and tokenizer fields copied from the source GGUF
(SmolLM2) or built from the Hugging Face config and tokenizer (Qwen3).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from core import prompt
from core.categories import LabelSet
from core.errors import HousechatError
from core.models import SMOLLM2, smollm2_gguf_path
from core.settings import OLLAMA_ROUTER_MODEL, Settings
from router.meta import read_meta, write_meta
from router.ollama_router import CATEGORIES_KEY, POLICY_KEY

ARCH_BY_MODEL_TYPE = {"llama": "llama", "qwen3": "qwen3"}


def merge(run_dir: Path, out_dir: Path, settings: Settings) -> tuple[Any, Any, dict[str, Any]]:
    """Base + adapter merged into plain weights, saved as safetensors in `out_dir/merged`."""
    from router.llm import load_adapted_model

    adapter = _adapter_dir(run_dir)
    meta = read_meta(adapter)
    if meta.get("mode", "score") == "classify":
        raise HousechatError(
            f"{adapter}: a classification-head router has no label tokens for Ollama or a GGUF to generate — "
            "export a label-scoring run (`mode: score`), or use this one in process (the llm backend)"
        )
    model, tokenizer = load_adapted_model(adapter, meta["base_model"], settings.var_dir)
    merged = Path(out_dir) / "merged"
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    write_meta(merged, {**meta, "merged_from": str(adapter)})
    return model, tokenizer, meta


def _adapter_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    for candidate in (run_dir / "adapter", run_dir):
        if (candidate / "meta.json").exists():
            return candidate
    raise HousechatError(f"{run_dir}: no adapter with meta.json — pass a run folder (runs/<recipe>) or a model dir")


def permute_llama(weights: Any, n_head: int) -> Any:
    """llama.cpp's rotary layout for q/k (transformers un-permutes on load, so we re-permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(model: Any) -> list[tuple[str, Any]]:
    """(gguf name, float32 numpy array) for every tensor of a merged llama/qwen3 model."""
    import gguf

    config = model.config
    arch = ARCH_BY_MODEL_TYPE.get(config.model_type)
    if arch is None:
        raise HousechatError(f"GGUF export supports llama and qwen3 models, not {config.model_type!r}")
    arch_enum = gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN3
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    out = []
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # tied embeddings have no output.weight
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise HousechatError(f"no GGUF name for tensor {hf_name} — the export does not know this layout")
        data = tensor.detach().float().numpy()
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = permute_llama(data, config.num_attention_heads)
        elif arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = permute_llama(data, config.num_key_value_heads)
        out.append((name, data))
    return out


def write_gguf(
    model: Any,
    tokenizer: Any,
    base_model: str,
    path: Path,
    thresholds: dict[str, float] | None = None,
    categories: list[dict[str, str]] | None = None,
) -> Path:
    """Write the merged model as an F32 GGUF that transformers and llama.cpp/Ollama can load.

    `thresholds` (the filter policy tuned on val) and `categories` (the label set it was trained
    on, from meta.json) go in as key/values the `ollama` router reads back: it refuses a served
    model trained on other categories than the file.
    """
    import gguf

    arch = ARCH_BY_MODEL_TYPE.get(model.config.model_type, "")
    if not arch:  # Gemma 3 (norm weights stored +1, its own tokenizer fields) is not written yet
        raise HousechatError(
            f"GGUF export supports llama (SmolLM2) and qwen3 models, not {model.config.model_type!r} — "
            "export without --gguf/--ollama to get the merged safetensors"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gguf.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    if base_model == SMOLLM2:
        _copy_metadata(gguf.GGUFReader(str(smollm2_gguf_path())), writer)
    else:
        _qwen3_metadata(writer, model.config, tokenizer)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if thresholds:
        writer.add_string(POLICY_KEY, json.dumps(thresholds))
    if categories:
        writer.add_string(CATEGORIES_KEY, json.dumps([[c["id"], c["code"]] for c in categories]))
    for name, data in gguf_tensors(model):
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def _copy_metadata(reader: Any, writer: Any) -> None:
    """Every key/value of the source GGUF (hyper-parameters and tokenizer) except the file type."""
    import gguf

    for field in reader.fields.values():
        if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) or field.name.startswith(
            "GGUF."
        ):
            continue
        if field.name.startswith("general.quantization"):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)


def _qwen3_metadata(writer: Any, config: Any, tokenizer: Any) -> None:
    """Qwen3 hyper-parameters from the HF config, tokenizer fields from the HF tokenizer (gpt2 BPE, qwen2)."""
    import gguf

    writer.add_name(OLLAMA_ROUTER_MODEL)
    writer.add_context_length(int(getattr(config, "max_position_embeddings", 40960)))
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get(
        "rope_theta", 1e6
    )
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)

    vocab = tokenizer.get_vocab()
    size = max(config.vocab_size, max(vocab.values()) + 1)
    by_id = {i: t for t, i in vocab.items()}
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(size):
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = _bpe_merges(tokenizer)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokenizer.convert_tokens_to_ids(tokenizer.eos_token))
    pad = tokenizer.pad_token or "<|endoftext|>"
    writer.add_pad_token_id(tokenizer.convert_tokens_to_ids(pad))
    writer.add_bos_token_id(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _bpe_merges(tokenizer: Any) -> list[str]:
    import json

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = state["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def modelfile(gguf_name: str, tokenizer: Any, labels: LabelSet, label_format: str) -> str:
    """An Ollama Modelfile whose TEMPLATE reproduces our prompt exactly (see core/prompt.py)."""
    prefix, suffix = prompt.split_prompt(tokenizer, labels, label_format)
    system = prompt.system_text(labels, label_format, with_scopes=False)
    # Our prompt is system + one user turn; Ollama fills .System and .Prompt into the same frame.
    template = prefix.replace(system, "{{ .System }}") + "{{ .Prompt }}" + suffix
    stop = tokenizer.eos_token or "<|im_end|>"
    return (
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{template}"""\n'
        f'SYSTEM """{system}"""\n'
        "PARAMETER temperature 0\n"
        f'PARAMETER stop "{stop}"\n'
        "PARAMETER num_predict 8\n"
    )


def export(
    run_dir: Path, settings: Settings, out_dir: Path | None = None, want_gguf: bool = True, want_ollama: bool = True
) -> dict[str, Path]:
    """Merge, and optionally write the GGUF and the Modelfile. Returns the paths written."""
    from router.meta import labels_from_meta

    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "export"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model, tokenizer, meta = merge(run_dir, out_dir, settings)
    written = {"merged": out_dir / "merged"}
    if want_gguf or want_ollama:
        written["gguf"] = write_gguf(
            model,
            tokenizer,
            meta["base_model"],
            out_dir / "router.gguf",
            meta.get("thresholds"),
            meta.get("categories"),
        )
    if want_ollama:
        labels = labels_from_meta(meta, str(run_dir))
        path = out_dir / "Modelfile"
        path.write_text(modelfile("router.gguf", tokenizer, labels, meta["label_format"]), encoding="utf-8")
        written["modelfile"] = path
    return written


def load_gguf_back(path: Path) -> tuple[Any, Any]:
    """Load an exported GGUF with transformers (dequantized), for checking the export."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    model.eval()
    return model, tokenizer
