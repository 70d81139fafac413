"""The README's library example runs as written (docs that cannot rot silently)."""

import contextlib
import io
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    start = text.index("```python", text.index("## Using the library from your own JAX code"))
    return text[start + len("```python") : text.index("```", start + 9)]


def test_library_example_embeds_and_verifies_ownership():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_example(), "README.md", "exec"), {"__name__": "readme_example"})
    assert out.getvalue().startswith("owned:"), out.getvalue()
