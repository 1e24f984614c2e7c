"""The scripted-noise quality benchmark on a small spread-out subset: no damage, every noisy mode
recovered. (The model benchmark, `--model`, is tests/benchmarks/test_quality_model.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "humaneval-infilling"


@pytest.mark.skipif(not DATA.is_dir(), reason="HumanEval-infilling data not beside the repository")
def test_bench_quality_subset_meets_the_targets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--limit", "12", "--jobs", "2"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )
    output = result.stdout
    assert "Ablation" in output, result.stderr
    assert re.findall(r"(Single-line|Multi-line): damage (\d+)", output) == [("Single-line", "0"), ("Multi-line", "0")]
    main_table = output.split("Ablation")[0]
    # Every mode (a role header and a line break first included) on both splits, at both cuts:
    # after the indentation and inside the line, through the streaming path.
    recovered = [float(value) for value in re.findall(r"-> +([\d.]+)%", main_table)]
    assert len(recovered) == 4 * 16, output  # 14 noise modes and 2 with an unsure tail
    assert min(recovered) >= 95.0, output
    assert "targets (damage 0, every mode >= 95% recovered on both splits and cuts): met" in output
    assert result.returncode == 0


@pytest.mark.skipif(not DATA.is_dir(), reason="HumanEval-infilling data not beside the repository")
def test_own_random_spans_stand_in_for_the_missing_official_file() -> None:
    """Without HumanEval-RandomSpanInfilling the model bench draws its own spans: 10 per
    problem, the same on every run, each a cut of the whole canonical program whose
    canonical span passes the problem's tests (so a failure is the model's, not the cut's)."""
    from bench import quality_model

    if (DATA / quality_model.SPLIT_FILES["random-span"]).is_file():
        pytest.skip("the official random-span file is there: the bench uses it")
    cases, notes = quality_model.humaneval_cases(DATA, None)
    spans = [case for case in cases if case.split == "own-span"]
    assert len(spans) == 1640 and any(note.startswith("own-span: 1640") for note in notes)
    assert spans == [case for case in quality_model.humaneval_cases(DATA, None)[0] if case.split == "own-span"]
    assert all(case.middle.strip() and case.cut == "span" for case in spans)
    for case in spans[::164]:
        assert quality_model.Judge(case).passes(case.middle, 0), case.task_id
        assert not quality_model.Judge(case).passes("", 0), case.task_id


def test_a_repeated_reference_line_counts_once_in_the_share_of_right_lines() -> None:
    """The share of shown lines that are reference lines is what the multi-line policies are judged by:
    an answer that repeats the right line (`return False` twice where the reference has it once) shows
    one right line and one a reader deletes, not two right ones."""
    from bench import quality_model

    case = quality_model.Case("single-line", "line", "t", "def f(x):\n    if x:\n        ", "return False",
                              "\n    return True\n")
    judge = quality_model.Judge(case)
    assert judge.surviving("return False") == (1, 1)
    assert judge.surviving("return False\n        return False") == (2, 1)
    assert judge.surviving("return False\n    return True") == (2, 1)  # the suffix's line is no reference line
    twice = quality_model.Case("multi-line", "line", "t", "def f(x):\n    ", "x += 1\n    x += 1", "\n    return x\n")
    assert quality_model.Judge(twice).surviving("x += 1\n    x += 1\n    x += 1") == (3, 2)
