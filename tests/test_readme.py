"""The README's API example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    api = next(b for b in blocks if "m3k.maxsim(" in b)
    namespace: dict = {}
    exec(compile(api, "README.md", "exec"), namespace)
    assert namespace["scores"].shape == (2, 3)
    assert namespace["out"].shape == (900, 16, 64)
    assert namespace["lex"].shape == (4, 4)
