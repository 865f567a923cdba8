"""Reading a BGE-M3 checkpoint directory offline: config.json, backbone weights (model.safetensors or
pytorch_model.bin, transformers' XLM-RoBERTa key names with an optional "roberta." prefix), the two head files
(colbert_linear.pt, sparse_linear.pt) and tokenizer.json. Every problem is a CheckpointError naming the file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from m3kernels.model.config import CheckpointError, EncoderConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HEAD_FILES = {"colbert": "colbert_linear.pt", "sparse": "sparse_linear.pt"}
# Keys a BGE-M3 checkpoint may carry that the encoder does not use.
IGNORED_PREFIXES = ("pooler.", "lm_head.", "embeddings.position_ids", "embeddings.token_type_ids")


@dataclass
class Checkpoint:
    """Everything from_pretrained needs, on the CPU in the stored dtypes."""

    path: Path
    config: EncoderConfig
    backbone: dict[str, Tensor]  # transformers key names, prefix stripped
    colbert: dict[str, Tensor]  # {"weight": [dim, hidden], "bias": [dim]}
    sparse: dict[str, Tensor]  # {"weight": [1, hidden], "bias": [1]}
    tokenizer_file: Path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing (a BGE-M3 checkpoint directory has config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable: {e}") from e


def _load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors / pickle raise many types for truncated or foreign files
        raise CheckpointError(f"{path} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensors)")
    return state


def expected_backbone_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """transformers' XLMRobertaModel key -> shape, for every tensor the encoder reads."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    per_layer = {
        "attention.self.query": (h, h),
        "attention.self.key": (h, h),
        "attention.self.value": (h, h),
        "attention.output.dense": (h, h),
        "intermediate.dense": (i, h),
        "output.dense": (h, i),
    }
    for n in range(config.num_hidden_layers):
        for name, shape in per_layer.items():
            shapes[f"encoder.layer.{n}.{name}.weight"] = shape
            shapes[f"encoder.layer.{n}.{name}.bias"] = (shape[0],)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"encoder.layer.{n}.{norm}.weight"] = (h,)
            shapes[f"encoder.layer.{n}.{norm}.bias"] = (h,)
    return shapes


def _check_backbone(state: dict[str, Tensor], config: EncoderConfig, source: Path) -> dict[str, Tensor]:
    if any(k.startswith("roberta.") for k in state):
        state = {k.removeprefix("roberta."): v for k, v in state.items()}
    want = expected_backbone_shapes(config)
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want and not k.startswith(IGNORED_PREFIXES)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match config.json ({config.num_hidden_layers} layers): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, shape in want.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, config.json implies {shape}"
            )
        if not state[key].is_floating_point():
            raise CheckpointError(f"{source}: {key} has dtype {state[key].dtype}, expected a float dtype")
    return {k: state[k] for k in want}


def _load_head(path: Path, out_features: int | None, hidden: int) -> dict[str, Tensor]:
    """A head file: the state_dict of nn.Linear(hidden, out_features) (out_features None: any)."""
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: BGE-M3 needs both colbert_linear.pt and sparse_linear.pt (FlagEmbedding would "
            "silently use randomly initialised heads here)"
        )
    state = _load_tensors(path)
    if set(state) != {"weight", "bias"}:
        raise CheckpointError(
            f"{path} must hold an nn.Linear state_dict {{weight, bias}}; got keys {sorted(state)}"
        )
    weight, bias = state["weight"], state["bias"]
    out = weight.shape[0] if out_features is None and weight.dim() == 2 else out_features
    if tuple(weight.shape) != (out, hidden) or tuple(bias.shape) != (out,):
        raise CheckpointError(
            f"{path}: weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not fit the backbone "
            f"(hidden size {hidden}; expected weight ({'dim' if out_features is None else out}, {hidden}))"
        )
    return {"weight": weight, "bias": bias}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Reads and validates a BGE-M3 checkpoint directory (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(
            f"{root} is not a directory (from_pretrained loads a local checkpoint directory)"
        )
    config = EncoderConfig.from_dict(_read_json(root / "config.json"), str(root / "config.json"))
    weight_file = next((root / f for f in WEIGHT_FILES if (root / f).is_file()), None)
    if weight_file is None:
        raise CheckpointError(f"{root} has no backbone weights (expected one of {', '.join(WEIGHT_FILES)})")
    backbone = _check_backbone(_load_tensors(weight_file), config, weight_file)
    colbert = _load_head(root / HEAD_FILES["colbert"], None, config.hidden_size)
    sparse = _load_head(root / HEAD_FILES["sparse"], 1, config.hidden_size)
    tokenizer_file = root / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(
            f"{tokenizer_file} is missing (the tokenizer is read with the `tokenizers` library; convert a "
            "sentencepiece-only checkpoint once with transformers' AutoTokenizer(...).save_pretrained)"
        )
    return Checkpoint(root, config, backbone, colbert, sparse, tokenizer_file)
