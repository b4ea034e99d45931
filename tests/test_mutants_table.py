"""The planted-bug table (``tests/mutants.py``) still matches the code: every edit's text occurs exactly once.

Running the mutants takes minutes, so CI does not; this check is instant, and a refactor that moves a
mutated line shows up here instead of making ``python tests/mutants.py`` fail later (or test nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import mutants  # noqa: E402


def test_every_mutant_edit_applies_to_the_current_code() -> None:
    """Each mutant's old text is in its file exactly once and differs from its new text; its tests exist."""
    problems = []
    for mutant in mutants.MUTANTS:
        for rel, old, new in mutant.edits:
            text = (ROOT / rel).read_text(encoding="utf-8") if (ROOT / rel).is_file() else ""
            if text.count(old) != 1 or old == new:
                problems.append(f"{mutant.name}: {rel}: found {text.count(old)} times")
        problems += [f"{mutant.name}: no test file {t}" for t in mutant.tests if not (ROOT / t).is_file()]
    assert not problems, problems
