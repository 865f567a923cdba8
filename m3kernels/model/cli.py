"""`m3k encode`: encode a text file with BGEM3 and write the requested heads to .npz or .jsonl."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from m3kernels.model.config import CheckpointError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="m3k encode",
        description="Encode texts with a BGE-M3 checkpoint. Input: .txt (one text per line) or .jsonl (a JSON "
        "string or an object with a 'text' field per line). Output .npz: dense [N, H]; sparse_indptr / "
        "sparse_ids / sparse_values (CSR); colbert_vecs [sum, dim] with colbert_cu_seqlens [N+1]. Output "
        ".jsonl: one object per text with 'dense', 'sparse' ({token_id: weight}) and 'colbert' as requested.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--input", required=True, help="texts.txt or texts.jsonl")
    p.add_argument("--output", required=True, help="out.npz or out.jsonl")
    p.add_argument("--dense", action="store_true", help="dense vectors (the default when no head is chosen)")
    p.add_argument("--sparse", action="store_true", help="lexical weights")
    p.add_argument("--colbert", action="store_true", help="multi-vector (ColBERT) vectors")
    p.add_argument("--max-length", type=int, default=512, help="tokens per text incl. <s> </s> (default 512)")
    p.add_argument("--batch-tokens", type=int, default=None, help="token budget per batch (default 16384)")
    p.add_argument("--batch-size", type=int, default=256, help="texts per batch at most (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, reference, cpu, triton, cuda")
    p.add_argument("--mcls", action="store_true", help="multiple CLS for long texts (dense = mean of <s> states)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    return p


def read_texts(path: Path) -> list[str]:
    """Lines of a .txt file, or the JSON string / object["text"] of each non-empty line of a .jsonl file (UTF-8,
    an optional BOM skipped). Lines end at "\n" (or "\r\n") only: str.splitlines would also split at form feeds,
    U+2028 and other characters that may sit inside a text (or a JSON string)."""
    with open(path, encoding="utf-8-sig", newline="") as f:  # newline="": no translation of a lone "\r"
        lines = f.read().split("\n")
    if lines[-1] == "":  # the newline ending the last line (or an empty file)
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError(f"{path}:{n}: expected a JSON string or an object with a string 'text' field")
        texts.append(item)
    return texts


def write_output(path: Path, res: dict, n: int) -> None:
    """res: BGEM3.encode(..., output="torch") of n texts."""
    dense, sparse, colbert = res["dense_vecs"], res["lexical_weights"], res["colbert_vecs"]
    if path.suffix == ".npz":
        arrays = {}
        if dense is not None:
            arrays["dense"] = dense.cpu().numpy()
        if sparse is not None:
            arrays.update(sparse_indptr=sparse.indptr.cpu().numpy(), sparse_ids=sparse.ids.cpu().numpy(),
                          sparse_values=sparse.values.cpu().numpy())
        if colbert is not None:
            arrays.update(colbert_vecs=colbert.cpu().numpy(),
                          colbert_cu_seqlens=res["colbert_cu_seqlens"].cpu().numpy())
        np.savez(path, **arrays)
        return
    dense_rows = dense.cpu().tolist() if dense is not None else None
    sparse_rows = sparse.to_dicts() if sparse is not None else None
    if colbert is not None:
        vecs, cu = colbert.cpu().numpy(), res["colbert_cu_seqlens"].tolist()
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = {}
            if dense_rows is not None:
                row["dense"] = dense_rows[i]
            if sparse_rows is not None:
                row["sparse"] = sparse_rows[i]
            if colbert is not None:
                row["colbert"] = vecs[cu[i] : cu[i + 1]].tolist()
            f.write(json.dumps(row) + "\n")


def encode_main(argv: list[str]) -> int:
    """Entry point of `m3k encode` (argv without the subcommand). Returns the exit status (2: bad input)."""
    args = _parser().parse_args(argv)
    out = Path(args.output)
    if out.suffix not in (".npz", ".jsonl"):
        print(f"m3k encode: --output must end in .npz or .jsonl; got {out}", file=sys.stderr)
        return 2
    dense = args.dense or not (args.sparse or args.colbert)
    try:
        texts = read_texts(Path(args.input))
        from m3kernels.model.bgem3 import BGEM3, check_backend, resolve_device

        try:
            check_backend(args.backend, resolve_device(args.device))
        except RuntimeError as e:  # an unavailable backend: a bad flag, like an unknown one
            raise ValueError(str(e)) from e
        model = BGEM3.from_pretrained(args.model, device=args.device, dtype=args.dtype, backend=args.backend)
        res = model.encode(
            texts,
            batch_size=args.batch_size,
            max_length=args.max_length,
            return_dense=dense,
            return_sparse=args.sparse,
            return_colbert_vecs=args.colbert,
            batch_tokens=args.batch_tokens,
            mcls=args.mcls,
            output="torch",
            show_progress=args.progress or None,
        )
        write_output(out, res, len(texts))
    except ModuleNotFoundError as e:  # tokenizers / tqdm: the optional "model" extra
        print(f"m3k encode: {e}; install them with pip install 'm3kernels[model]'", file=sys.stderr)
        return 2
    except (OSError, ValueError, CheckpointError) as e:
        print(f"m3k encode: {e}", file=sys.stderr)
        return 2
    print(f"m3k encode: {len(texts)} texts -> {out}", file=sys.stderr)
    return 0
