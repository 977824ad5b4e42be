"""The README's Python example runs as written (in a temporary folder, on phantoms, in seconds)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its tested Python example (the block after <!-- readme-example -->)"
    return m.group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(_example(), "README.md", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert re.search(r"^test real 2 0\.\d+", out, re.M), out
    assert (tmp_path / "example" / "synth" / "manifest.jsonl").is_file()
    assert (tmp_path / "example" / "bench" / "report.md").is_file()
