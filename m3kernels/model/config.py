"""The XLM-RoBERTa settings the packed encoder needs, read from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# model_type values whose checkpoints share XLM-RoBERTa's layout and position rule (positions from pad_id + 1).
SUPPORTED_MODEL_TYPES = ("xlm-roberta", "roberta")
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded as BGE-M3 (missing, unreadable or inconsistent files)."""


@dataclass(frozen=True)
class EncoderConfig:
    """XLM-RoBERTa hyper-parameters (names as in transformers' XLMRobertaConfig)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    pad_token_id: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """Longest text (incl. <s> and </s>) the position table holds: positions run pad_id+1 .. max_pos-1."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> EncoderConfig:
        """Validates a config.json dict: XLM-R/RoBERTa encoder, absolute positions, known activation."""
        model_type = raw.get("model_type")
        archs = raw.get("architectures") or []
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"{source}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
                f"BGE-M3 is an XLM-RoBERTa encoder (model_type one of {SUPPORTED_MODEL_TYPES})"
            )
        if raw.get("is_decoder", False):
            raise CheckpointError(f"{source}: is_decoder=true; BGE-M3 needs a bidirectional encoder")
        pos_type = raw.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise CheckpointError(
                f"{source}: position_embedding_type={pos_type!r}; only 'absolute' is supported"
            )
        fields = {}
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = raw.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CheckpointError(f"{source}: {name} must be a positive int; got {value!r}")
            fields[name] = value
        for name in ("type_vocab_size", "pad_token_id"):
            if raw.get(name) is not None:
                fields[name] = int(raw[name])
        fields["layer_norm_eps"] = float(raw.get("layer_norm_eps", 1e-5))
        act = raw.get("hidden_act", "gelu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise CheckpointError(f"{source}: hidden_act={act!r} is not one of {SUPPORTED_ACTIVATIONS}")
        fields["hidden_act"] = act
        config = cls(**fields)
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(
                f"{source}: hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if config.max_tokens < 2:
            raise CheckpointError(f"{source}: max_position_embeddings is too small for <s> and </s>")
        return config
