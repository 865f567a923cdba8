"""Run by test_flagembedding_parity.py with the FlagEmbedding venv's python (transformers 4.5x) and the repo on
PYTHONPATH: enable_hf on XLMRobertaModel vs eager attention. Prints JSON {"version", "max_diff", "calls"}."""

import json
import sys

import torch
import transformers

from m3kernels.integrations import hf

calls = []
real = hf.attention_varlen
hf.attention_varlen = lambda *a, **k: calls.append(1) or real(*a, **k)
path = sys.argv[1]
eager = transformers.XLMRobertaModel.from_pretrained(path, attn_implementation="eager").eval()
ours = hf.enable_hf(transformers.XLMRobertaModel.from_pretrained(path).eval())
gen = torch.Generator().manual_seed(0)
ids = torch.randint(4, eager.config.vocab_size - 1, (3, 19), generator=gen)
mask = torch.ones_like(ids)
mask[1, 7:] = 0
mask[2, 2:] = 0
ids = ids.masked_fill(mask == 0, 1)
with torch.no_grad():
    a = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    b = ours(input_ids=ids, attention_mask=mask).last_hidden_state
diff = (a[mask.bool()] - b[mask.bool()]).abs().max().item()
print(json.dumps({"version": transformers.__version__, "max_diff": diff, "calls": len(calls)}))
