"""Output that never throws work away (dagr/outputs.py, dagr/runner.py): every --out is
checked before any work (its kind, whether it can be written, an earlier result there), a
trailing slash or an existing folder means a folder, the scores format follows the suffix,
and when the final write fails anyway the message names the partial file that holds the
finished work, which --resume then writes."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

import evaluate_vqa as ev
import extract_frame as ef
from conftest import write_video
from dagr import files
from dagr.outputs import failures_file, folder_output, scores_output, scores_path
from dagr.sharding import Shard
from fakes import TINY_SIZE
from fakes_vqa import scoring_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Three small videos and a tiny quality checkpoint (saliency off)."""
    base = tmp_path_factory.mktemp("outputs")
    for i in range(3):
        write_video(base / "videos" / f"v{i}.avi", 9, size=(40, 56))
    quality, _ = scoring_checkpoints(base, TINY_SIZE)
    return {"videos": base / "videos", "quality": quality}


def score(corpus, out: str | Path, *options: str) -> int:
    return ev.main(["--checkpoint", str(corpus["quality"]), "--videos", str(corpus["videos"]),
                    "--out", str(out), "--device", "cpu", "--workers", "0", *options])


def csv_scores(path: Path) -> dict[str, float]:
    with open(path, newline="") as handle:
        return {row["video"]: float(row["score"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict[str, float]:
    """The scores of one plain CSV run."""
    out = tmp_path_factory.mktemp("reference") / "scores.csv"
    assert score(corpus, out) == 0
    return csv_scores(out)


# ----------------------------------------------------------------------------- the rule

def test_one_failures_file_rule_for_folders_and_files(tmp_path):
    assert failures_file(tmp_path / "frames", folder=True) == tmp_path / "frames" / "failures.csv"
    assert failures_file(tmp_path / "s.csv", folder=False) == tmp_path / "s_failures.csv"
    assert failures_file(tmp_path / "s.jsonl", folder=False) == tmp_path / "s_failures.csv"
    assert scores_output(tmp_path / "s.json").failures == tmp_path / "s_failures.csv"
    assert folder_output(tmp_path / "maps").failures == tmp_path / "maps" / "failures.csv"


def test_scores_paths_by_suffix_and_folder(tmp_path):
    (tmp_path / "existing").mkdir()
    assert scores_path(tmp_path / "existing") == tmp_path / "existing" / "scores.csv"
    assert scores_path(f"{tmp_path / 'new'}/") == tmp_path / "new" / "scores.csv"
    for name in ("a.csv", "a.json", "a.jsonl", "a.CSV"):
        assert scores_path(tmp_path / name) == tmp_path / name
    for name in ("a.txt", "a", "a.csv.bak"):
        with pytest.raises(ValueError, match=f"{name}: a scores file ends in .csv, .json, .jsonl"):
            scores_path(tmp_path / name)


def test_a_folder_output_that_is_a_file_is_refused(corpus, tmp_path, capsys):
    (tmp_path / "frames").write_text("a file")
    assert ef.main(["--videos", str(corpus["videos"]), "--out", str(tmp_path / "frames")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'frames'}: is a file; --out "
                                               "names a folder here")


# ----------------------------------------------------------------------------- scoring's --out

def test_scoring_into_an_existing_folder_writes_scores_csv_there(corpus, reference, tmp_path,
                                                                 capsys):
    """The reported case: `--out results` with `results` a folder scored every video, then
    failed on the rename; now the scores go to results/scores.csv."""
    (tmp_path / "results").mkdir()
    assert score(corpus, tmp_path / "results") == 0
    assert csv_scores(tmp_path / "results" / "scores.csv") == reference
    assert f"3 of 3 videos scored into {tmp_path / 'results' / 'scores.csv'}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["scores.csv",
                                                                     "scores.meta.json"]


def test_a_trailing_slash_makes_a_folder(corpus, reference, tmp_path):
    assert score(corpus, f"{tmp_path / 'newdir'}/") == 0
    assert (tmp_path / "newdir").is_dir()
    assert csv_scores(tmp_path / "newdir" / "scores.csv") == reference


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_and_jsonl_scores_follow_the_suffix(corpus, reference, tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    assert score(corpus, out) == 0
    text = out.read_text()
    objects = (json.loads(text) if suffix == ".json"
               else [json.loads(line) for line in text.splitlines()])
    assert {o["video"]: o["score"] for o in objects} == reference
    assert [o["video"] for o in objects] == sorted(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, "scores.meta.json"]  # no CSV


def test_sharded_json_scores_are_those_of_one_process(corpus, reference, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert score(corpus, out, "--shard", "1/2") == 0
    assert not out.exists()
    assert score(corpus, out, "--shard", "0/2") == 0
    assert {json.loads(line)["video"]: json.loads(line)["score"]
            for line in out.read_text().splitlines()} == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, "scores.meta.json"]


def test_an_unknown_suffix_is_refused_before_any_work(corpus, tmp_path, capsys):
    assert score(corpus, tmp_path / "scores.txt") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'scores.txt'}: a scores file "
                                               "ends in .csv, .json, .jsonl")
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_result_is_refused_or_resumed_up_front(corpus, reference, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    out.write_text("video,score\n")
    assert score(corpus, out) == 2
    assert capsys.readouterr().err.strip() == (f"error: {out}: already exists (an earlier run's "
                                               "result); give another --out or remove it")
    assert out.read_text() == "video,score\n"
    out.unlink()
    partial = tmp_path / "scores.csv.partial"
    partial.write_text("video,score,kind,problem\r\n")
    assert score(corpus, out) == 2  # the partial file is an interrupted run's work
    assert f"error: {partial}: the scores of an interrupted run are kept there; --resume" in \
        capsys.readouterr().err
    assert score(corpus, out, "--resume") == 0
    assert csv_scores(out) == reference and not partial.exists()


def test_a_failed_final_write_names_the_partial_file_and_loses_nothing(corpus, reference,
                                                                       tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "scores.csv"
    real_replace = os.replace

    def refuse(source, target):
        if Path(target) == out:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", refuse)
    assert score(corpus, out) == 2
    err = capsys.readouterr().err
    partial = tmp_path / "scores.csv.partial"
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert "Traceback" not in err and err.count("error:") == 1
    assert last.startswith(f"error: {out}: could not be written (")
    assert last.endswith(f"the results of 3 videos are kept in {partial}: run the same "
                           "command with --resume to write it")
    with open(partial, newline="") as handle:
        kept = {row["video"]: float(row["score"]) for row in csv.DictReader(handle)}
    assert kept == pytest.approx(reference, rel=1e-5)
    assert not out.exists()
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert score(corpus, out, "--resume") == 0
    assert "3 of 3 videos scored" in capsys.readouterr().out
    assert csv_scores(out) == reference and not partial.exists()


def test_scores_output_checks_the_partial_file_of_its_shard(tmp_path):
    shard = Shard(1, 2)
    (tmp_path / "scores.shard-1-of-2.csv.partial").write_text("video,score,kind,problem\r\n")
    scores_output(tmp_path / "scores.csv")  # another shard's partial file: not this one's
    with pytest.raises(OSError, match="scores.shard-1-of-2.csv.partial: the scores of an "):
        scores_output(tmp_path / "scores.csv", shard)
    assert scores_output(tmp_path / "scores.csv", shard, resume=True).path == tmp_path / "scores.csv"


@pytest.mark.parametrize("earlier", ["s.json", "s.jsonl"])
def test_a_scores_file_of_the_same_stem_in_another_format_is_refused(tmp_path, earlier):
    (tmp_path / earlier).write_text("[]")
    (tmp_path / "s.meta.json").write_text("{}")  # that run's sidecar, which s.csv would replace
    with pytest.raises(OSError, match=f"{earlier}: already exists, and s.csv would share its "
                                      r"failures CSV and sidecar \(s.meta.json\)"):
        scores_output(tmp_path / "s.csv")
    (tmp_path / earlier).unlink()  # the sidecar of a removed scores file is replaced
    assert scores_output(tmp_path / "s.csv").path == tmp_path / "s.csv"


def test_a_refused_scores_run_leaves_no_folder_behind(corpus, tmp_path, capsys):
    not_a_model = tmp_path / "model.safetensors"
    not_a_model.write_bytes(b"not a model")
    assert ev.main(["--model", str(not_a_model), "--videos", str(corpus["videos"]),
                    "--out", str(tmp_path / "new" / "deeper") + "/"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    with pytest.raises(OSError, match="output folder cannot be written"):
        scores_output(tmp_path / "model.safetensors" / "scores.csv")  # under a file
