"""The README's "Query the results" examples run as written against a results directory."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

from test_analysis_fixture import build_results

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "mia_results/quickstart"


def _section_code_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Query the results\n", 1)
    assert len(section) == 2 or text.startswith("## Query the results\n"), (
        "README lacks '## Query the results'"
    )
    body = section[1] if len(section) == 2 else text.split("\n", 1)[1]
    body = re.split(r"\n## ", body, maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_query_examples_run(tmp_path):
    blocks = _section_code_blocks()
    assert len(blocks) >= 3 and PLACEHOLDER in blocks[0]
    root = build_results(str(tmp_path / "fixture"))
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block.replace(PLACEHOLDER, root), str(README), "exec"), namespace)
    printed = out.getvalue()
    assert "ddpm" in printed and "smld" in printed and "best_step" in printed and "ε spent" in printed
    best = namespace["best"]
    assert set(zip(best["family"], best["step"], strict=True)) == {("ddpm", 200), ("smld", 500)}
