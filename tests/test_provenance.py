"""Provenance: which changes mark a run as coming from a dirty tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

from xnorbench.runs.environment import code_changes


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "reports" / "cpu").mkdir(parents=True)
    (repo / "kernel.cpp").write_text("int x;\n")
    (repo / "reports" / "cpu" / "xnorbench.db").write_bytes(b"SQLite format 3\0")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "init")
    return repo


def test_a_results_database_written_by_the_run_does_not_make_it_dirty(tmp_path: Path):
    repo = _repo(tmp_path)
    (repo / "reports" / "cpu" / "xnorbench.db").write_bytes(b"SQLite format 3\0rows")
    (repo / "reports" / "cpu" / "xnorbench.db-wal").write_bytes(b"wal")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    assert "xnorbench.db" in status
    assert code_changes(status) == []


def test_a_changed_source_file_makes_it_dirty(tmp_path: Path):
    repo = _repo(tmp_path)
    (repo / "reports" / "cpu" / "xnorbench.db").write_bytes(b"SQLite format 3\0rows")
    (repo / "kernel.cpp").write_text("int y;\n")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    assert code_changes(status) == ["kernel.cpp"]
    _git(repo, "mv", "kernel.cpp", "kernel2.cpp")
    assert code_changes(_git(repo, "status", "--porcelain", "--untracked-files=no")) == [
        "kernel2.cpp"]


def test_the_copiers_stamp_wins_over_a_copys_stale_git(monkeypatch):
    """The device machine's copy carried a .git of an earlier state: runs of a clean
    commit were stored as that earlier commit, dirty. A stamp set by the copier wins."""
    from xnorbench.runs.environment import git_state

    here, _ = git_state()  # this checkout has a .git
    assert here is not None
    monkeypatch.setenv("XNORBENCH_GIT_COMMIT", "0" * 40)
    monkeypatch.setenv("XNORBENCH_GIT_DIRTY", "0")
    assert git_state() == ("0" * 40, False)
    monkeypatch.setenv("XNORBENCH_GIT_DIRTY", "1")
    assert git_state() == ("0" * 40, True)
