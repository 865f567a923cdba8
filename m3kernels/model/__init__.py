"""BGE-M3 on m3kernels' ops: checkpoint loading, the packed XLM-RoBERTa encoder and the FlagEmbedding-compatible
BGEM3 class."""

from m3kernels.model.bgem3 import BGEM3, PackedOutput
from m3kernels.model.config import CheckpointError, EncoderConfig
from m3kernels.model.encoder import PackedXLMRobertaEncoder

__all__ = ["BGEM3", "CheckpointError", "EncoderConfig", "PackedOutput", "PackedXLMRobertaEncoder"]
