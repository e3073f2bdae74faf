"""radlab.runs helpers on hand-written run folders."""

from __future__ import annotations

from pathlib import Path

from radlab import runs


def test_read_summary(tmp_path: Path) -> None:
    assert runs.read_summary(tmp_path) == {}  # no DONE
    runs.mark_complete(tmp_path, {"global_step": 3, "train_flops": 1.5e12})
    assert runs.read_summary(tmp_path) == {"global_step": 3, "train_flops": 1.5e12}
    (tmp_path / runs.DONE_MARKER).write_text("", encoding="utf-8")  # an empty marker: finished, no numbers
    assert runs.read_summary(tmp_path) == {}
    (tmp_path / runs.DONE_MARKER).write_text("{torn", encoding="utf-8")
    assert runs.read_summary(tmp_path) == {}
    (tmp_path / runs.DONE_MARKER).write_text("[1, 2]", encoding="utf-8")
    assert runs.read_summary(tmp_path) == {}
