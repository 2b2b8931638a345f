"""The README, the study pages and results/README.md are in step with results/: every generated table
is what `python bench/results_docs.py` writes from the results files, so no number is typed twice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import results_docs  # noqa: E402


@pytest.fixture(scope="module")
def documents() -> dict[Path, str]:
    return results_docs.documents()


def test_readme_pages_and_results_index_match_what_the_results_generate(documents) -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in documents.items() if not p.exists() or p.read_text() != text]
    assert not stale, f"out of step with results/: {stale}; run python bench/results_docs.py"


def test_the_readme_has_the_summary_and_every_page_has_a_generated_table(documents) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "<!-- generated: summary -->" in readme and len(readme.splitlines()) <= 300
    for page in ("light-client", "strong-references", "generality", "deployment", "earlier"):
        assert "<!-- generated: " in (ROOT / "docs" / f"{page}.md").read_text(), page


def test_a_number_edited_by_hand_is_caught(documents) -> None:
    readme = ROOT / "README.md"
    edited = readme.read_text().replace("| 114.7 |", "| 104.7 |", 1)
    assert edited != readme.read_text()
    assert results_docs.regenerate(edited) == documents[readme]


def test_every_results_folder_is_indexed_with_its_stage(documents) -> None:
    index = documents[ROOT / "results" / "README.md"]
    for folder in (p.name for p in (ROOT / "results").iterdir() if p.is_dir()):
        row = next(line for line in index.splitlines() if line.startswith(f"| [{folder}/]"))
        assert "dvc repro" in row or folder == "earlier", row
