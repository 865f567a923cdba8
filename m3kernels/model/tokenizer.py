"""tokenizer.json read with the `tokenizers` library (no transformers): XLM-R ids, <s> text </s>, truncation."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from m3kernels.model.config import CheckpointError, EncoderConfig

SPECIAL_TOKENS = {"cls": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}


class Tokenizer:
    """Wraps tokenizers.Tokenizer; ``ids`` holds the special ids (cls, pad, eos, unk) BGE-M3 relies on."""

    def __init__(self, path: str | Path, config: EncoderConfig):
        from tokenizers import Tokenizer as _Tokenizer

        try:
            self._tok = _Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a generic Exception for malformed files
            raise CheckpointError(f"{path} is unreadable as a `tokenizers` tokenizer.json: {e}") from e
        self._tok.no_padding()
        self._tok.no_truncation()
        self.ids: dict[str, int] = {}
        for role, token in SPECIAL_TOKENS.items():
            tid = self._tok.token_to_id(token)
            if tid is None:
                raise CheckpointError(f"{path} has no {token} token (XLM-R's special tokens are required)")
            self.ids[role] = tid
        if self.ids["pad"] != config.pad_token_id:
            raise CheckpointError(
                f"{path}: <pad> has id {self.ids['pad']} but config.json says pad_token_id={config.pad_token_id}"
            )
        if self._tok.get_vocab_size() > config.vocab_size:
            raise CheckpointError(
                f"{path}: the tokenizer has {self._tok.get_vocab_size()} tokens, more than config.json's "
                f"vocab_size {config.vocab_size}"
            )
        self._truncation: int | None = None
        # The truncation length is state of the shared tokenizer, and encode_batch releases the GIL: without the
        # lock, a thread encoding at another max_length could change it in the middle of this call's batch.
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]  # a lock neither copies nor pickles: copy.deepcopy(model) must work
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids FlagEmbedding drops from lexical weights: <s>, </s>, <pad>, <unk>."""
        return tuple(sorted(set(self.ids.values())))

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text, ``<s> ... </s>`` truncated to max_length tokens (specials included), as
        transformers' tokenizer(texts, truncation=True, max_length=max_length) gives them."""
        with self._lock:
            if self._truncation != max_length:
                self._tok.enable_truncation(max_length)
                self._truncation = max_length
            return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=True)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)
