"""Every ```python block of docs/concepts/*.md runs and its assertions hold.

Each block is self-contained (its own imports) and runs in a fresh namespace, so a page
whose claim stops holding for recforge's code fails the build, and a reader can paste any
one block alone. Blocks are small by design: each runs in about a second on 2 cores.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs" / "concepts").glob("*.md"))


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


CASES = [
    pytest.param(block, id=f"{page.stem}-{i}")
    for page in PAGES
    for i, block in enumerate(python_blocks(page))
]


def test_every_concept_page_has_an_example_and_links_to_code():
    assert PAGES, "docs/concepts/ holds no page"
    index = (ROOT / "docs" / "concepts" / "README.md").read_text()
    for page in PAGES:
        text = page.read_text()
        if page.name != "README.md":
            assert python_blocks(page), f"{page.name}: no runnable example"
            assert page.name in index, f"{page.name} is not listed in docs/concepts/README.md"
        for link in re.findall(r"\]\((\.\./\.\./[^)#]+)", text):
            assert (page.parent / link).resolve().exists(), f"{page.name}: broken link {link}"


@pytest.mark.parametrize("block", CASES)
def test_concept_example_runs(block, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention
    try:
        exec(compile(block, "<docs example>", "exec"), {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)
