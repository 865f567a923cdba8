"""m3kernels' varlen attention inside transformers' BERT-family encoders (XLM-RoBERTa, RoBERTa, BERT, ...).

transformers >= 5 (and the 4.5x models that already dispatch through ``ALL_ATTENTION_FUNCTIONS``): an attention
function and a mask function are registered under ATTN_IMPLEMENTATION; the mask function hands the 2-D padding
mask through, and the attention function unpads q/k/v with it, runs attention_varlen and re-pads.
Older 4.5x models (XLM-RoBERTa and BERT in 4.57 pick a self-attention class per implementation): each
self-attention module's forward is replaced by one that does the same from the 4-D additive mask.
transformers is imported only inside these functions."""

from __future__ import annotations

import sys
import types

import torch
from torch import Tensor, nn

from m3kernels.attention import attention_varlen

ATTN_IMPLEMENTATION = "m3k_varlen"


def key_padding(mask: Tensor | None, batch: int, length: int) -> Tensor | None:
    """Valid-key mask [B, L] bool from what transformers passes to attention: None (no padding), a 2-D mask
    (nonzero = token), a 4-D bool mask (True = attend) or a 4-D additive float mask (0 = attend) of shape
    [B, 1, 1 or L_q, L]. Raises ValueError for a 4-D mask that is not the same for every query (not padding)."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask[:, -length:].bool()
    if mask.dim() != 4 or mask.shape[0] != batch or mask.shape[-1] != length:
        raise ValueError(f"expected a [B, L] or [B, 1, Lq, L] attention mask; got shape {tuple(mask.shape)}")
    allowed = mask if mask.dtype == torch.bool else mask == 0
    if not bool((allowed == allowed[:, :, :1, :]).all()) or mask.shape[1] != 1:
        raise ValueError(
            "m3k_varlen handles key-padding masks only (the same mask for every query); this model passes a "
            "causal or custom 4-D mask"
        )
    return allowed[:, 0, 0, :]


def padded_varlen_attention(
    query: Tensor, key: Tensor, value: Tensor, valid: Tensor | None, scale: float, backend: str = "auto"
) -> Tensor:
    """Attention of padded [B, heads, L, D] q/k/v over the valid keys of each row, with attention_varlen on
    the packed valid tokens. Returns [B, L, heads, D]; padded query rows are 0."""
    bsz, heads, length, dim = query.shape
    q, k, v = (x.transpose(1, 2).reshape(bsz * length, heads, dim) for x in (query, key, value))
    if valid is None:
        cu = torch.arange(0, (bsz + 1) * length, length, dtype=torch.int32, device=query.device)
        return attention_varlen(q, k, v, cu, length, scale=scale, backend=backend).view(bsz, length, heads, dim)
    valid = valid.to(query.device)
    index = valid.reshape(-1).nonzero().squeeze(1)
    lengths = valid.sum(1, dtype=torch.int32)
    cu = torch.zeros(bsz + 1, dtype=torch.int32, device=query.device)
    torch.cumsum(lengths, 0, out=cu[1:])
    packed = attention_varlen(q[index], k[index], v[index], cu, int(lengths.max()), scale=scale, backend=backend)
    out = q.new_zeros(bsz * length, heads, dim)
    out[index] = packed
    return out.view(bsz, length, heads, dim)


def m3k_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-interface signature: q/k/v [B, heads, L, D] -> ([B, L, heads, D], None), on the
    backend enable_hf stored on the module (the function is registered once, for every model)."""
    if module.training and dropout > 0:
        raise NotImplementedError("m3k_varlen has no attention dropout; call model.eval() for inference")
    if getattr(module, "is_causal", False) or query.shape[2] != key.shape[2]:
        raise NotImplementedError("m3k_varlen runs bidirectional self-attention only")
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    valid = key_padding(attention_mask, query.shape[0], key.shape[2])
    return padded_varlen_attention(query, key, value, valid, scale, getattr(module, "_m3k_backend", "auto")), None


def _padding_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                  attention_mask=None, **kwargs):
    """transformers' mask-interface signature: hands the 2-D padding mask through (None when nothing is
    padded), as transformers' flash-attention mask does."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:]
    return None if bool(attention_mask.all()) else attention_mask.bool()


def _legacy_forward(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
                    *args, **kwargs):
    """Self-attention forward for transformers 4.5x models without the attention interface."""
    if encoder_hidden_states is not None or head_mask is not None or kwargs.get("output_attentions"):
        raise NotImplementedError("m3k_varlen supports self-attention without head_mask / output_attentions")
    bsz, length, _ = hidden_states.shape
    q, k, v = (
        proj(hidden_states).view(bsz, length, self.num_attention_heads, self.attention_head_size).transpose(1, 2)
        for proj in (self.query, self.key, self.value)
    )
    valid = key_padding(attention_mask, bsz, length)
    ctx = padded_varlen_attention(q, k, v, valid, self.attention_head_size**-0.5, self._m3k_backend)
    return ctx.reshape(bsz, length, -1), None


def _uses_attention_interface(module: nn.Module) -> bool:
    return hasattr(sys.modules[type(module).__module__], "ALL_ATTENTION_FUNCTIONS")


def _self_attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if all(hasattr(m, a) for a in ("query", "key", "value", "num_attention_heads"))]


def enable_hf(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Makes a transformers BERT-family encoder (XLMRobertaModel, RobertaModel, BertModel, ...) run its
    self-attention on m3kernels.attention_varlen, honouring the attention mask's padding. Returns the model.

    Example: ``model = enable_hf(AutoModel.from_pretrained(path).eval())``; outputs at real tokens match
    transformers' eager attention; padded positions see zero attention output."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_decoder", False):
        raise ValueError("enable_hf takes a transformers encoder model (config.is_decoder must be False)")
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise NotImplementedError("enable_hf supports absolute position embeddings only")
    layers = _self_attention_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BERT-style self-attention modules (query/key/value)")
    for layer in layers:  # per model: another model's enable_hf must not change this one's backend
        layer._m3k_backend = backend
    if all(_uses_attention_interface(m) for m in layers):
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_IMPLEMENTATION, m3k_attention)
        try:
            from transformers.masking_utils import AttentionMaskInterface

            AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _padding_mask)
        except ImportError:  # older 4.5x: the model builds its own 4-D mask, key_padding reads it
            pass
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(ATTN_IMPLEMENTATION)
        else:
            for m in model.modules():
                if getattr(m, "config", None) is not None:
                    m.config._attn_implementation = ATTN_IMPLEMENTATION
        return model
    # Older models pick the additive-mask path with "eager"; the patched modules read that mask.
    for m in model.modules():
        if getattr(m, "config", None) is not None:
            m.config._attn_implementation = "eager"
        if hasattr(m, "attn_implementation"):
            m.attn_implementation = "eager"
    for layer in layers:
        layer.forward = types.MethodType(_legacy_forward, layer)
    return model
