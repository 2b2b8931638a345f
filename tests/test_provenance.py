"""The study scripts' shared arguments and provenance record (taskcodec.provenance)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taskcodec.provenance import ROOT, bench_parser, default_data, start_bench, write_json, write_provenance

SHARED_ZIP = str(ROOT.parent / "shared" / "data" / "tiny-imagenet-100.zip")


def test_default_data_honours_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("TASKCODEC_DATA", raising=False)
    assert default_data() == SHARED_ZIP
    monkeypatch.setenv("TASKCODEC_DATA", "/elsewhere/tiny.zip")
    assert default_data() == "/elsewhere/tiny.zip"
    args = bench_parser("doc", out="o", threads=None).parse_args([])
    start_bench(args)  # the dataset's default copy is filled in before any work
    assert args.data == "/elsewhere/tiny.zip"
    args = bench_parser("doc", out="o", threads=None).parse_args(["--dataset", "imagenette"])
    start_bench(args)
    assert args.data == str(ROOT.parent / "shared" / "data" / "imagenette-160.zip")
    with pytest.raises(SystemExit):
        bench_parser("doc", out="o").parse_args(["--dataset", "cifar7"])


def test_bench_parser_defaults(monkeypatch) -> None:
    monkeypatch.delenv("TASKCODEC_DATA", raising=False)
    parser = bench_parser("What the study measures.\n\n    python bench/x.py", out="results/x", threads=3)
    args = parser.parse_args([])
    assert (args.out, args.data, args.dataset, args.threads) == ("results/x", None, "tiny_imagenet", 3)
    args.threads = None  # fill in the data without touching this process's torch threads
    start_bench(args)
    assert args.data == SHARED_ZIP
    assert "python bench/x.py" in parser.format_help()  # the docstring, verbatim
    assert bench_parser("d").parse_args(["--out", "o"]).threads == 1
    args = parser.parse_args(["--out", "elsewhere", "--data", "d.zip", "--threads", "2"])
    assert (args.out, args.data, args.threads) == ("elsewhere", "d.zip", 2)


def test_bench_parser_requires_out_without_a_default(capsys) -> None:
    with pytest.raises(SystemExit):
        bench_parser("d").parse_args([])
    assert "--out" in capsys.readouterr().err
    assert bench_parser("d").parse_args(["--out", "x.json"]).out == "x.json"


def test_bench_parser_leaves_out_what_a_script_does_not_use() -> None:
    args = bench_parser("d", out="o", data=False, threads=None).parse_args([])
    assert not hasattr(args, "data") and not hasattr(args, "threads")
    start_bench(args)  # nothing to apply


def test_start_bench_sets_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        start_bench(bench_parser("d", out="o", threads=1).parse_args([]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_write_provenance(tmp_path) -> None:
    path = tmp_path / "new" / "folder" / "provenance.json"
    record = write_provenance(path, threads=2, args={"seed": 0})
    on_disk = json.loads(path.read_text())
    assert on_disk == record
    assert {"command", "git_revision", "git_dirty"} <= set(on_disk)
    assert on_disk["threads"] == 2 and on_disk["args"] == {"seed": 0}
    assert isinstance(on_disk["git_dirty"], bool) and on_disk["git_revision"]
    assert [p.name for p in path.parent.iterdir()] == ["provenance.json"]  # no temporary file left


def test_write_provenance_leaves_nothing_when_it_fails(tmp_path) -> None:
    path = tmp_path / "provenance.json"
    with pytest.raises(TypeError):
        write_provenance(path, value=object())  # not JSON
    assert list(tmp_path.iterdir()) == []


def test_write_json_replaces_a_record_whole_or_not_at_all(tmp_path) -> None:
    path = tmp_path / "rows.json"
    write_json(path, {"a": [1, 2]}, indent=None)
    assert path.read_text() == '{"a": [1, 2]}'  # one line: the per-image files
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2]} and list(tmp_path.iterdir()) == [path]


def test_import_does_not_load_torch() -> None:
    code = "import sys, taskcodec.provenance; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_bench_scripts_use_the_shared_helpers() -> None:
    """No study script reads git or builds its own parser: one record format, one data default."""
    for script in sorted((ROOT / "bench").glob("*.py")):
        text = script.read_text()
        assert "rev-parse" not in text, f"{script.name}: use taskcodec.provenance, not git itself"
        assert 'tiny-imagenet-100.zip"' not in text, f"{script.name}: use bench_parser's --data"
        assert "write_text(json.dumps" not in text, f"{script.name}: write records with write_json (atomic)"
        if "argparse.ArgumentParser(" in text:
            pytest.fail(f"{script.name}: build the parser with taskcodec.provenance.bench_parser")


def test_git_dirty_counts_code_not_the_results_a_study_writes(tmp_path, monkeypatch) -> None:
    """A study rewrites its tracked results/ folder and dvc.lock while it runs: that is not a dirty tree."""
    import subprocess

    from taskcodec import provenance

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    for name in ("code.py", "dvc.lock", "results/table.csv"):
        (tmp_path / name).write_text("a\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    (tmp_path / "results" / "table.csv").write_text("b\n")
    (tmp_path / "dvc.lock").write_text("b\n")
    assert provenance.run_provenance()["git_dirty"] is False
    (tmp_path / "code.py").write_text("b\n")
    assert provenance.run_provenance()["git_dirty"] is True
