"""`benchmarks/run_all.py --only`: the sections it keeps are cut from the existing output by their headings."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run_all  # noqa: E402


def test_split_sections_keeps_each_section_whole_including_its_inner_headings():
    modules = [module for module, *_ in run_all.SECTIONS]
    parts = [
        f"{heading}\n\nbody of {module}\n\n## an inner table of {module}\n| a |"
        for module, heading, *_ in run_all.SECTIONS
    ]
    markdown = "# Benchmarks\n\nheader text\n\n" + "\n\n".join(parts) + "\n"
    sections = run_all.split_sections(markdown)
    assert list(sections) == modules
    for module, part in zip(modules, parts):
        assert sections[module] == part


def test_only_refuses_to_keep_a_section_the_output_lacks(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nno sections yet\n")
    kept_module = run_all.SECTIONS[0][0]
    rerun = [module for module, *_ in run_all.SECTIONS if module != kept_module]
    with pytest.raises(SystemExit, match=f"no {kept_module} section to keep"):
        run_all.main(["--only", *rerun, "--output", str(output)])
