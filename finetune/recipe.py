"""A training recipe: YAML → `Recipe` dataclass. Unknown keys are errors that name the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import HousechatError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
CODE_ROWS = ("frozen", "trained", "from_names")
MODES = ("score", "classify")


@dataclass(frozen=True)
class Recipe:
    name: str
    base_model: str  # embedded:smollm2-135m | embedded:gemma3-270m | tiny:qwen3 | a hub id (Qwen/Qwen3-0.6B) | a folder
    label_format: str = "codes"  # codes | names
    # score = the LM's logits of the label tokens after the prompt (a causal LM + LoRA);
    # classify = one forward of the question, a linear head over the last token's hidden state
    # (AutoModelForSequenceClassification), LoRA on the body, cross-entropy over the label set.
    mode: str = "score"  # score | classify
    engine: str = "auto"  # auto | trl | unsloth
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # PEFT's default would be q,v only
    # > 0: LoRA on the top N decoder layers only, so the backward pass stops there (CPU time)
    lora_layers: int = 0
    full_finetune: bool = False  # train every weight instead of a LoRA adapter
    # codes only: the code tokens' output-embedding rows. frozen = the base's rows (LoRA must learn
    # 20 arbitrary associations); trained = those rows train with the adapter; from_names = trained,
    # starting from the mean row of each category name's tokens, so a code starts out meaning its name.
    code_rows: str = "frozen"  # frozen | trained | from_names
    epochs: float = 3.0
    max_steps: int = -1  # > 0 caps the number of optimizer steps (smoke runs)
    learning_rate: float = 1e-3
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    seed: int = 13
    early_stopping_patience: int = 2  # evaluations without val-accuracy gain before stopping
    evals_per_epoch: int = 1
    max_train_examples: int = 0  # > 0 uses a seeded subset (smoke runs)
    max_val_examples: int = 0
    load_in_4bit: bool = False  # QLoRA (unsloth engine on CUDA only)
    threads: int = 0  # torch CPU threads; 0 = torch's default. On a loaded 2-core box 1 is faster.
    # Training data beyond data/routing/train.jsonl (household data only, not with train_file), as
    # `python -m finetune embedding` gathers it: the extra train-only questions (data/routing/extra)
    # and the house notes' paragraphs ("title. paragraph", labelled with the note's category).
    extra_questions: bool = False
    notes: bool = False
    max_length: int = 256  # tokens per training example (longer ones are cut)
    # classify only, > 0: the head also reads the categories and titles of the top N chunks of an
    # unfiltered search of the household's store (`router.llm.StoreContext`), in training and routing.
    store_context: int = 0
    # with store_context: also each chunk's note title ("pool: Pool pump seal"); false = the categories alone,
    # a shorter input (faster routing)
    store_context_titles: bool = True
    # classify only: the head also reads the embedding router's top two guesses with their probabilities
    # (`router.llm.RouterHint`; out-of-fold guesses for the training questions, `finetune.hints`).
    router_hint: bool = False
    train_file: str | None = None
    val_file: str | None = None
    labels_from_data: bool = False  # with train_file: the files' own labels (codes assigned), not the categories file
    output_dir: str | None = None  # default runs/<name>

    def out_dir(self, runs_dir: Path) -> Path:
        return Path(self.output_dir) if self.output_dir else runs_dir / self.name


def load_recipe(path: Path, **overrides: Any) -> Recipe:
    """Read a recipe YAML; `overrides` (e.g. from CLI flags) win over the file."""
    import yaml

    path = Path(path)
    if not path.exists() and (RECIPES_DIR / path.name).exists():
        path = RECIPES_DIR / path.name
    if not path.exists() and (RECIPES_DIR / f"{path.name}.yaml").exists():
        path = RECIPES_DIR / f"{path.name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise HousechatError(f"{path}: recipe not found — use a path or one of: {known}") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        raise HousechatError(f"{path}:{line}: invalid YAML — fix the syntax") from None
    if not isinstance(raw, dict):
        raise HousechatError(f"{path}:1: a recipe is a mapping of keys to values")
    raw.setdefault("name", path.stem)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known_keys = {f.name for f in dataclasses.fields(Recipe)}
    for key in raw:
        if key not in known_keys:
            import difflib

            near = difflib.get_close_matches(key, sorted(known_keys), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(sorted(known_keys))}"
            raise HousechatError(f"{path}:{_line_of(path, key)}: unknown recipe key {key!r} — {hint}")
    if "base_model" not in raw:
        raise HousechatError(f"{path}:1: recipe has no base_model — add e.g. `base_model: embedded:smollm2-135m`")
    recipe = Recipe(**raw)
    if recipe.label_format not in ("codes", "names"):
        raise HousechatError(f"{path}:{_line_of(path, 'label_format')}: label_format must be codes or names")
    if recipe.engine not in ("auto", "trl", "unsloth"):
        raise HousechatError(f"{path}:{_line_of(path, 'engine')}: engine must be auto, trl or unsloth")
    if recipe.mode not in MODES:
        raise HousechatError(f"{path}:{_line_of(path, 'mode')}: mode must be {' or '.join(MODES)}")
    if recipe.mode == "classify" and (
        recipe.full_finetune or recipe.code_rows != "frozen" or recipe.engine == "unsloth"
    ):
        raise HousechatError(
            f"{path}:{_line_of(path, 'mode')}: mode classify trains a LoRA adapter and a head with the trl engine — "
            "remove full_finetune, code_rows and `engine: unsloth`"
        )
    if recipe.store_context < 0 or (recipe.store_context and recipe.mode != "classify"):
        raise HousechatError(
            f"{path}:{_line_of(path, 'store_context')}: store_context is a number of chunks (0 or more) and "
            "needs `mode: classify`"
        )
    if recipe.router_hint and (recipe.mode != "classify" or recipe.train_file):
        raise HousechatError(
            f"{path}:{_line_of(path, 'router_hint')}: router_hint needs `mode: classify` and the household's data "
            "(the household's embedding router guesses) — remove train_file, or router_hint"
        )
    if (recipe.extra_questions or recipe.notes) and recipe.train_file:
        raise HousechatError(
            f"{path}:{_line_of(path, 'notes' if recipe.notes else 'extra_questions')}: extra_questions and notes add "
            "the household's data — remove them when training on --train-file"
        )
    if recipe.code_rows not in CODE_ROWS:
        raise HousechatError(f"{path}:{_line_of(path, 'code_rows')}: code_rows must be {', '.join(CODE_ROWS)}")
    if recipe.code_rows != "frozen" and (recipe.label_format != "codes" or recipe.full_finetune):
        raise HousechatError(
            f"{path}:{_line_of(path, 'code_rows')}: code_rows {recipe.code_rows!r} needs label_format codes "
            "and a LoRA adapter — remove it or set `label_format: codes`"
        )
    return recipe


def _line_of(path: Path, key: str) -> int:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.split(":")[0].strip() == key:
            return n
    return 1
