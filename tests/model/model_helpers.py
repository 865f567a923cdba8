"""Oracles for the model tests: a padded float64 XLM-RoBERTa written plainly, and padding helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hf_state(ckpt) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def padded_reference(state, config, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' XLMRobertaModel last hidden state in float64, written plainly on a padded batch:
    ids / mask [B, L] (mask 1 = token). Returns [B, L, hidden]."""
    s = {k: v.double() for k, v in state.items()}
    h, heads = config.hidden_size, config.num_attention_heads
    d = h // heads
    pad = config.pad_token_id
    real = ids.ne(pad).long()
    pos = torch.cumsum(real, 1) * real + pad

    def ln(x, pre):
        return F.layer_norm(x, (h,), s[f"{pre}.weight"], s[f"{pre}.bias"], config.layer_norm_eps)

    def lin(x, pre):
        return x @ s[f"{pre}.weight"].T + s[f"{pre}.bias"]

    x = s["embeddings.word_embeddings.weight"][ids] + s["embeddings.position_embeddings.weight"][pos]
    x = ln(x + s["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    bias = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(mask == 0, float("-inf"))[:, None, None, :]
    b, length = ids.shape
    for n in range(config.num_hidden_layers):
        p = f"encoder.layer.{n}"
        q, k, v = (lin(x, f"{p}.attention.self.{w}").view(b, length, heads, d).transpose(1, 2)
                   for w in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / d**0.5 + bias, -1) @ v
        x = ln(x + lin(att.transpose(1, 2).reshape(b, length, h), f"{p}.attention.output.dense"),
               f"{p}.attention.output.LayerNorm")
        y = lin(F.gelu(lin(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
        x = ln(x + y, f"{p}.output.LayerNorm")
    return x


def pad_batch(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), length), pad, dtype=torch.int64)
    mask = torch.zeros(len(seqs), length, dtype=torch.int64)
    for i, x in enumerate(seqs):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask
