"""Tiny BGE-M3 checkpoints in the real layout, for tests and benchmarks (no download, no transformers).

``build_checkpoint(dir)`` writes config.json, model.safetensors (or pytorch_model.bin) with transformers'
XLM-RoBERTa key names, colbert_linear.pt and sparse_linear.pt (fp16, like BAAI/bge-m3), and a Unigram tokenizer
trained with the `tokenizers` library in the XLM-R id layout (<s>=0, <pad>=1, </s>=2, <unk>=3, ..., <mask>=last)
plus the tokenizer_config.json / special_tokens_map.json that transformers' AutoTokenizer reads."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

# Word pools in several scripts (zh / ja: one word per character); texts are random draws of any length.
WORDS = {
    "en": "the retrieval model encodes every passage into dense sparse and multi vector representations for "
    "search ranking with long documents and short queries about science history music weather cities",
    "de": "der schnelle braune Fuchs springt über den faulen Hund und die Katze schläft im warmen Haus während "
    "Regen fällt Straße Wissenschaft Geschichte",
    "fr": "le modèle de recherche lit chaque document et la question puis calcule une similarité très précise "
    "pour la langue française écrite été hiver",
    "ru": "модель поиска читает каждый документ и вопрос затем вычисляет сходство для русского языка зима лето "
    "город музыка история",
    "zh": "检索模型将每个段落编码为稠密稀疏和多向量表示用于搜索排序长文档短查询科学历史音乐天气城市",
    "ar": "نموذج البحث يقرأ كل وثيقة والسؤال ثم يحسب التشابه للغة العربية المدينة الموسيقى التاريخ",
    "ja": "検索モデルは各文書と質問を読み類似度を計算します東京音楽歴史天気",
    "es": "el modelo de búsqueda lee cada documento y la pregunta luego calcula la similitud para el idioma "
    "español ciudad música historia",
}
JOINER = {"zh": "", "ja": ""}


@dataclass(frozen=True)
class TinyConfig:
    """Backbone sizes of a generated checkpoint (REAL_SIZE: BAAI/bge-m3's shapes)."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 8194
    vocab_size: int | None = None  # None: the trained tokenizer's size
    tokenizer_vocab: int = 600


REAL_SIZE = TinyConfig(1024, 24, 16, 4096, 8194, 250002, 1000)


def random_text(rng: random.Random, n_words: int, lang: str | None = None) -> str:
    """n_words words drawn from one language's pool (random language when lang is None)."""
    lang = lang or rng.choice(sorted(WORDS))
    pool = list(WORDS[lang]) if lang in JOINER else WORDS[lang].split()
    return JOINER.get(lang, " ").join(rng.choice(pool) for _ in range(n_words))


def training_corpus(seed: int = 0, n: int = 400) -> list[str]:
    """Deterministic multilingual sentences to train the tokenizer on."""
    rng = random.Random(seed)
    return [random_text(rng, rng.randint(5, 40), lang) for lang in sorted(WORDS) for _ in range(n // len(WORDS))]


def train_tokenizer(vocab_size: int, seed: int = 0):
    """A Unigram tokenizer (Metaspace, ``<s> $A </s>``) with XLM-R's ids: <s>=0, <pad>=1, </s>=2, <unk>=3 and
    <mask> as the last id. Returns a tokenizers.Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(seed), trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def _linear(gen: torch.Generator, out_f: int, in_f: int, prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f),
        f"{prefix}.bias": torch.randn(out_f, generator=gen) * 0.05,
    }


def _norm(gen: torch.Generator, h: int, prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.1 * torch.randn(h, generator=gen),
        f"{prefix}.bias": 0.05 * torch.randn(h, generator=gen),
    }


def random_backbone(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random XLMRobertaModel weights (transformers key names, pooler included), float32."""
    gen = torch.Generator().manual_seed(seed)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    state = {
        "embeddings.word_embeddings.weight": 0.5 * torch.randn(cfg["vocab_size"], h, generator=gen),
        "embeddings.position_embeddings.weight": 0.2 * torch.randn(cfg["max_position_embeddings"], h, generator=gen),
        "embeddings.token_type_embeddings.weight": 0.1 * torch.randn(cfg["type_vocab_size"], h, generator=gen),
        **_norm(gen, h, "embeddings.LayerNorm"),
    }
    for n in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{n}"
        for name in ("query", "key", "value"):
            state.update(_linear(gen, h, h, f"{pre}.attention.self.{name}"))
        state.update(_linear(gen, h, h, f"{pre}.attention.output.dense"))
        state.update(_norm(gen, h, f"{pre}.attention.output.LayerNorm"))
        state.update(_linear(gen, i, h, f"{pre}.intermediate.dense"))
        state.update(_linear(gen, h, i, f"{pre}.output.dense"))
        state.update(_norm(gen, h, f"{pre}.output.LayerNorm"))
    state.update(_linear(gen, h, h, "pooler.dense"))
    return state


def build_checkpoint(
    path: str | Path,
    config: TinyConfig = TinyConfig(),
    *,
    seed: int = 0,
    weights_format: str = "safetensors",
    key_prefix: str = "",
    colbert_dim: int | None = None,
) -> Path:
    """Writes a BGE-M3 checkpoint directory with seeded random weights (see the module docstring).

    weights_format: "safetensors" (model.safetensors) or "bin" (pytorch_model.bin); key_prefix: e.g.
    "roberta." as in checkpoints saved from XLMRobertaForMaskedLM; colbert_dim: colbert output size
    (default hidden_size). Returns the directory."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(config.tokenizer_vocab, seed)
    tok.save(str(root / "tokenizer.json"))
    vocab = config.vocab_size or tok.get_vocab_size()
    cfg = {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": vocab,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "classifier_dropout": None,
        "torch_dtype": "float32",
    }
    (root / "config.json").write_text(json.dumps(cfg, indent=2))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
    (root / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    tok_cfg = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": config.max_position_embeddings - 2,
               **specials}
    (root / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    state = {key_prefix + k: v for k, v in random_backbone(cfg, seed).items()}
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
    elif weights_format == "bin":
        torch.save(state, root / "pytorch_model.bin")
    else:
        raise ValueError(f"weights_format must be 'safetensors' or 'bin'; got {weights_format!r}")
    gen = torch.Generator().manual_seed(seed + 1)
    h = config.hidden_size
    colbert = _linear(gen, colbert_dim or h, h, "x")
    sparse = _linear(gen, 1, h, "x")
    for name, head in (("colbert_linear.pt", colbert), ("sparse_linear.pt", sparse)):
        torch.save({k.removeprefix("x."): v.half() for k, v in head.items()}, root / name)
    return root
