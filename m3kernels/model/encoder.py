"""XLM-RoBERTa encoder on packed tokens: hidden states [total_tokens, hidden] with cu_seqlens, no padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3kernels import _backend
from m3kernels.attention import attention_varlen
from m3kernels.model.config import EncoderConfig

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def packed_positions(input_ids: Tensor, cu_seqlens: Tensor, pad_id: int) -> Tensor:
    """transformers' XLM-R position rule per packed text: ``pos_t = pad_id + (number of non-pad tokens among
    0..t of the same text)`` for non-pad tokens and ``pad_id`` for pad tokens; so 2, 3, 4, ... for pad_id 1.

    input_ids [T] int64, cu_seqlens [B+1] int32/int64 -> [T] int64."""
    real = (input_ids != pad_id).long()
    running = torch.cumsum(real, 0)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    before = (running - real)[cu_seqlens[:-1].long().clamp(max=max(input_ids.numel() - 1, 0))]
    start = torch.repeat_interleave(before, lengths, output_size=input_ids.numel())
    return (running - start) * real + pad_id


class EncoderLayer(nn.Module):
    """Post-LN transformer layer with one fused QKV projection."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        h, i, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=eps)
        self.ffn_in = nn.Linear(h, i)
        self.ffn_out = nn.Linear(i, h)
        self.ffn_norm = nn.LayerNorm(h, eps=eps)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor, cu_seqlens: Tensor, max_seqlen: int, backend: str) -> Tensor:
        """x [T, hidden] -> [T, hidden]: LN(x + Wo attn(x)), then LN(y + W2 act(W1 y))."""
        t, h = x.shape
        # One batched GEMM writes Q, K and V as [3, T, hidden]: each is contiguous, so the attention kernels
        # read them without the three copies that slicing a [T, 3 * hidden] projection would need.
        qkv = torch.baddbmm(self.qkv.bias.view(3, 1, h), x.expand(3, t, h), self.qkv.weight.view(3, h, h).mT)
        q, k, v = (y.view(t, self.heads, self.head_dim) for y in qkv.unbind(0))
        ctx = attention_varlen(q, k, v, cu_seqlens, max_seqlen, backend=_backend.for_op("attention_varlen", backend))
        y = self.attn_norm(x + self.attn_out(ctx.reshape(t, -1)))
        return self.ffn_norm(y + self.ffn_out(self.act(self.ffn_in(y))))


class PackedXLMRobertaEncoder(nn.Module):
    """XLM-RoBERTa (transformers' XLMRobertaModel without the pooler) on packed tokens.

    ``forward(input_ids [T] int64, cu_seqlens [B+1] int32, max_seqlen)`` returns the last hidden states
    [T, hidden] in the parameters' dtype. Text b is rows cu_seqlens[b]:cu_seqlens[b+1]; its positions restart at
    pad_id + 1; attention never crosses texts (attention_varlen, on ``backend`` where it has it, else
    on auto)."""

    def __init__(self, config: EncoderConfig, backend: str = "auto"):
        super().__init__()
        h = config.hidden_size
        self.config = config
        self.backend = backend
        self.word_embeddings = nn.Embedding(config.vocab_size, h)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.emb_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    @classmethod
    def from_hf_state(cls, config: EncoderConfig, state: dict[str, Tensor], backend: str = "auto"):
        """Builds the encoder from transformers' XLMRobertaModel keys (see checkpoint.expected_backbone_shapes),
        fusing query/key/value into one [3*hidden, hidden] projection. Tensors keep their stored dtype."""
        with torch.device("meta"):
            model = cls(config, backend)
        ours = {
            "word_embeddings.weight": state["embeddings.word_embeddings.weight"],
            "position_embeddings.weight": state["embeddings.position_embeddings.weight"],
            "token_type_embeddings.weight": state["embeddings.token_type_embeddings.weight"],
            "emb_norm.weight": state["embeddings.LayerNorm.weight"],
            "emb_norm.bias": state["embeddings.LayerNorm.bias"],
        }
        names = {
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        for n in range(config.num_hidden_layers):
            pre = f"encoder.layer.{n}."
            for p in ("weight", "bias"):
                parts = [state[f"{pre}attention.self.{x}.{p}"] for x in ("query", "key", "value")]
                ours[f"layers.{n}.qkv.{p}"] = torch.cat([t.to(parts[0].dtype) for t in parts])
                for mine, theirs in names.items():
                    ours[f"layers.{n}.{mine}.{p}"] = state[f"{pre}{theirs}.{p}"]
        model.load_state_dict(ours, strict=True, assign=True)
        return model

    def embed(self, input_ids: Tensor, cu_seqlens: Tensor) -> Tensor:
        """LN(word + position + token_type[0]) for packed ids [T] -> [T, hidden]."""
        pos = packed_positions(input_ids, cu_seqlens, self.config.pad_token_id)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(pos)
            + self.token_type_embeddings.weight[0]
        )
        return self.emb_norm(x)

    def forward(self, input_ids: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        x = self.embed(input_ids, cu_seqlens)
        for layer in self.layers:
            x = layer(x, cu_seqlens, max_seqlen, self.backend)
        return x
