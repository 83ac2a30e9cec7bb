"""RESULTS.md keeps one section per numba target: a run replaces its own, keeps the others'."""

from __future__ import annotations

import os

from bench import sections

PREAMBLE = "# Benchmark results\n\nintro\n"


def test_two_targets_kept_and_replaced_in_place(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    sections.write_section(path, PREAMBLE, "znver5 AVX-512", "## native\n\n| a |\n")
    sections.write_section(path, PREAMBLE, "haswell AVX2", "## avx2\n\n| b |")
    _, found = sections.split(open(path).read())
    assert found == {"znver5 AVX-512": "## native\n\n| a |", "haswell AVX2": "## avx2\n\n| b |"}

    sections.write_section(path, PREAMBLE + "more\n", "znver5 AVX-512", "## native\n\n| c |")
    text = open(path).read()
    preamble, found = sections.split(text)
    assert list(found) == ["znver5 AVX-512", "haswell AVX2"]  # replaced where it was
    assert found["znver5 AVX-512"] == "## native\n\n| c |"
    assert found["haswell AVX2"] == "## avx2\n\n| b |"
    assert preamble.rstrip() == (PREAMBLE + "more").rstrip()
    assert "| a |" not in text
    assert [p for p in os.listdir(tmp_path) if p != "RESULTS.md"] == []  # no temporary left


def test_a_file_without_sections_is_replaced_whole(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n| old one-table format |\n")
    sections.write_section(str(path), PREAMBLE, "haswell AVX2", "## avx2")
    preamble, found = sections.split(path.read_text())
    assert preamble.rstrip() == PREAMBLE.rstrip() and found == {"haswell AVX2": "## avx2"}


def test_merge_is_idempotent():
    once = sections.merge("", PREAMBLE, "k", "body")
    assert sections.merge(once, PREAMBLE, "k", "body") == once
