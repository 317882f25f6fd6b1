"""The README's command transcripts say what the commands print today (docs/readme_check.py).

Each `$ stacksim ...` line of the README that names only files in the checkout is run, and the
lines the README shows after it must appear in its output, in order (wall-clock times aside).
When a change moves a figure, this fails with the README line and the closest line printed:
update the README (and the prose that quotes the figure), not the test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "workloads" / "azure_llm_2023"


def _checker():
    spec = importlib.util.spec_from_file_location("readme_check", ROOT / "docs" / "readme_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["readme_check"] = mod
    spec.loader.exec_module(mod)
    return mod


C = _checker()
# (page, transcript): the README's and the manual's (docs/scenarios.md, docs/model.md)
TRANSCRIPTS = [(pg, t) for pg in C.PAGES for t in C.transcripts(pg.read_text()) if t.runnable()]


def test_the_readme_has_transcripts_to_check() -> None:
    assert len(TRANSCRIPTS) >= 10
    assert all(t.expected for _, t in TRANSCRIPTS)
    assert sum(pg == C.README for pg, _ in TRANSCRIPTS) >= 5  # the tour keeps its own


def test_the_checker_tells_a_stale_line_from_an_excerpt() -> None:
    t = C.Transcript(1, "stacksim x", ["a  1   wall 0.5 s", "...", "c │ 3 ... │"])
    assert C.check(t, "a 1 wall 9.25 s\nb\nc │ 3 and more │\n") is None
    assert "README line not in the output" in C.check(t, "a 2 wall 1 s\nc │ 3 x │\n")
    assert "README line not in the output" in C.check(t, "c │ 3 x │\na 1 wall 1 s\n")  # order matters


@pytest.mark.slow
@pytest.mark.parametrize(("page", "t"), TRANSCRIPTS, ids=[f"{pg.stem}-line{t.line}" for pg, t in TRANSCRIPTS])
def test_readme_transcript_matches_the_command(page: Path, t, tmp_path: Path) -> None:
    if "azure" in t.command and not SHARED.is_dir():
        pytest.skip("the shared Azure trace is not beside the checkout")
    out = C.run(t, tmp_path)
    problem = C.check(t, out)
    assert problem is None, f"{page.name} line {t.line}: $ {t.command}\n{problem}"
