"""dagr/labels.py and dagr/splits.py: plain label formats (csv / tsv / xlsx, DOVER's labels.txt),
DMOS, and splits on disk."""
import pandas as pd
import pytest

import evaluate_vqa as ev
import extract_frame as ef
import train_lsvq as tl
from dagr import finetune, labels as ls
from dagr.datasets import read_table
from dagr.labels import LabelFileError, reported_problems
from dagr.splits import read_splits, write_splits
from fakes_vqa import TINY, stored_quality_set


def videos(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


def test_csv_finds_usual_columns_and_videos_with_or_without_extension(tmp_path, capsys):
    root = videos(tmp_path / "v", "a.mp4", "sub/b.mkv", "c.avi")
    labels = tmp_path / "ratings.csv"
    labels.write_text("name,MOS,other\na.mp4,3.5,x\nsub/b,4,y\nc,nan,z\nmissing.mp4,2,w\n"
                      "a,1.0,again\n")
    with reported_problems() as reported:
        table = read_table("csv", labels, root)
    assert table["video_id"].tolist() == ["a", "sub/b"]
    assert table["mos"].tolist() == [3.5, 4.0] and set(table["split"]) == {"all"}
    assert table["path"].tolist() == [str(root / "a.mp4"), str(root / "sub/b.mkv")]
    problems = " | ".join(reported)
    assert f"{labels}: 1 row(s) with a missing or non-numeric MOS left out (c)" in problems
    assert "1 repeated video id(s), first row kept (a)" in problems
    assert "1 of 3 video(s) not found" in problems and "missing" in problems


def test_numeric_ids_with_an_empty_cell_keep_their_names(tmp_path):
    labels = tmp_path / "konvid_like.csv"
    labels.write_text("flickr_id,mos\n3337642103,3.2\n,4.0\n8536919744,2.5\n")
    assert read_table("csv", labels)["video_id"].tolist() == ["3337642103", "8536919744"]


def test_tsv_and_xlsx_with_named_columns_and_a_split_column(tmp_path):
    rows = pd.DataFrame({"clip": ["v1", "v2", "v3"], "rating": [1.0, 2.0, 3.0],
                         "part": ["train", "Validation", "test"]})
    rows.to_csv(tmp_path / "l.tsv", sep="\t", index=False)
    rows.to_excel(tmp_path / "l.xlsx", index=False)
    columns = ls.LabelColumns(video="clip", mos="rating", split="part")
    for name in ("l.tsv", "l.xlsx"):
        table = read_table("csv", tmp_path / name, columns=columns)
        assert table["video_id"].tolist() == ["v1", "v2", "v3"]
        assert table["split"].tolist() == ["train", "val", "test"]


def test_csv_errors_name_the_file(tmp_path):
    labels = tmp_path / "l.csv"
    labels.write_text("clip,rating\nv1,1\n")
    with pytest.raises(LabelFileError, match=f"{labels}: no video column found .*--video-column"):
        read_table("csv", labels)
    with pytest.raises(LabelFileError, match=f"{labels}: missing column.*'score'.*it has: clip"):
        read_table("csv", labels, columns=ls.LabelColumns(video="clip", mos="score"))
    labels.write_text("video,mos,split\nv1,1,train\nv2,2,holdout\n")
    with pytest.raises(LabelFileError, match="split values 'holdout' are not train, val or test"):
        read_table("csv", labels)
    with pytest.raises(FileNotFoundError, match="label file not found"):
        read_table("csv", tmp_path / "none.csv")


def test_dmos_is_trained_as_given_unless_flipped(tmp_path, capsys):
    labels = tmp_path / "l.csv"
    labels.write_text("video,dmos\nv1,10\nv2,40\n")
    assert read_table("csv", labels)["mos"].tolist() == [10, 40]
    assert "looks like DMOS" in capsys.readouterr().err
    flipped = read_table("csv", labels, columns=ls.LabelColumns(dmos=True))
    assert flipped["mos"].tolist() == [-10, -40]
    text = tmp_path / "labels.txt"
    text.write_text("v1.mp4, 8.0, 30, 10\n")
    assert read_table("labels-txt", text, columns=ls.LabelColumns(dmos=True))["mos"].tolist() == [-10]


def test_labels_txt_lines_and_their_errors(tmp_path):
    root = videos(tmp_path / "v", "3337642103.mp4", "b/2.mkv")
    text = tmp_path / "labels.txt"
    text.write_text("3337642103.mp4, 8.0, 30.0, 3.55\n\nb/2.mkv, 10, 25, 4.1\nc.mp4, 1, 1, x\n")
    with reported_problems() as reported:
        table = read_table("labels-txt", text, root)
    assert table["video_id"].tolist() == ["3337642103", "b/2"]
    assert table["mos"].tolist() == [3.55, 4.1]
    assert "non-numeric MOS left out (c)" in " ".join(reported)
    text.write_text("a.mp4, 1, 2, 3\na.mp4; 3.2\n")
    with pytest.raises(LabelFileError, match=f"{text}: line 2 is not 'path, duration, fps, score'"):
        read_table("labels-txt", text)
    text.write_text("\n")
    with pytest.raises(LabelFileError, match="no label lines"):
        read_table("labels-txt", text)


def test_read_splits_checks_the_file(tmp_path):
    table = pd.DataFrame({"video_id": ["a", "b", "c", "d"], "path": None, "mos": [1, 2, 3, 4],
                          "split": "all"})
    parts = {"train": table.iloc[:2], "val": table.iloc[2:3], "test": table.iloc[3:]}
    write_splits(parts, tmp_path / "splits.csv")
    back = read_splits(tmp_path / "splits.csv", table)
    assert {k: v["video_id"].tolist() for k, v in back.items()} == {
        "train": ["a", "b"], "val": ["c"], "test": ["d"]}
    (tmp_path / "bad.csv").write_text("video_id,split\na,train\nc,val\nzz,test\n")
    with pytest.raises(LabelFileError, match=f"{tmp_path / 'bad.csv'}: 1 video.* not in the labels.*zz"):
        read_splits(tmp_path / "bad.csv", table)
    (tmp_path / "twice.csv").write_text("video_id,split\na,train\na,val\n")
    with pytest.raises(LabelFileError, match="named twice: a"):
        read_splits(tmp_path / "twice.csv", table)


@pytest.mark.slow
def test_csv_set_through_extract_train_splits_round_trip_and_evaluate(tmp_path, make_video):
    _, frames, maps = stored_quality_set(tmp_path / "set")
    ids = sorted(p.name for p in frames.iterdir())
    labels = tmp_path / "mine.csv"
    pd.DataFrame({"filename": [f"{i}.mp4" for i in ids], "score": range(len(ids))}).to_csv(
        labels, index=False)
    common = ["--dataset", "csv", "--labels", str(labels), "--frames", str(frames),
              "--saliency", str(maps), *TINY, "--epochs", "1"]
    assert tl.main([*common, "--out", str(tmp_path / "first"), "--seed", "1"]) == 0
    written = pd.read_csv(tmp_path / "first" / "splits.csv", dtype={"video_id": str})
    assert sorted(written["video_id"]) == ids and set(written["split"]) == {"train", "val", "test"}
    # a second run, other seed, on the written file: the same videos in every part
    assert tl.main([*common, "--out", str(tmp_path / "second"), "--seed", "7",
                    "--splits", str(tmp_path / "first" / "splits.csv")]) == 0
    again = pd.read_csv(tmp_path / "second" / "splits.csv", dtype={"video_id": str})
    assert again.sort_values("video_id").equals(written.sort_values("video_id"))
    tested = [pd.read_csv(tmp_path / run / "predictions_test.csv", dtype={"video_id": str})
              for run in ("first", "second")]
    assert sorted(tested[0]["video_id"]) == sorted(tested[1]["video_id"]) == sorted(
        written.loc[written["split"] == "test", "video_id"])
    # the same file with a split column: evaluate_vqa scores its test rows
    split = written.set_index("video_id")["split"]
    pd.DataFrame({"filename": ids, "score": range(len(ids)), "split": [split[i] for i in ids]}
                 ).to_csv(labels, index=False)
    assert ev.main(["--checkpoint", str(tmp_path / "second" / "best.pt"), "--dataset", "csv",
                    "--labels", str(labels), "--frames", str(frames), "--saliency", str(maps),
                    "--out", str(tmp_path / "eval"), "--workers", "0", "--device", "cpu"]) == 0
    scored = pd.read_csv(tmp_path / "eval" / "predictions_Labelled set.csv", dtype={"video_id": str})
    assert sorted(scored["video_id"]) == sorted(tested[0]["video_id"])
    # a splits file naming a video the labels lack stops the run with its name
    (tmp_path / "other.csv").write_text("video_id,split\n" + "\n".join(
        f"{i},train" for i in ids) + "\nghost,val\n")
    assert tl.main([*common, "--out", str(tmp_path / "third"), "--splits",
                    str(tmp_path / "other.csv")]) == 2


def test_extract_frame_reads_a_csv_set(tmp_path, make_video, capsys):
    make_video("clips/a.avi", 6)
    make_video("clips/sub/b.avi", 6)
    labels = tmp_path / "l.csv"
    labels.write_text("video_name,MOS\na.avi,3\nsub/b,4\nnone,1\n")
    out = tmp_path / "frames"
    code = ef.main(["--dataset", "csv", "--labels", str(labels), "--root",
                    str(tmp_path / "clips"), "--out", str(out), "--workers", "1",
                    "--size", "16", "16"])
    assert code == 1 and "none" in capsys.readouterr().err  # the missing one, left out
    assert (out / "a" / ef.FRAME_LIST).is_file() and (out / "sub" / "b" / ef.FRAME_LIST).is_file()


def test_finetuning_protocol_passes_the_columns_and_refuses_a_splits_file(tmp_path):
    item = ev.LabelledSet("csv", tmp_path / "l.csv", tmp_path / "frames")
    with pytest.raises(ValueError, match="--splits does not combine with --finetune-splits"):
        ev.finetune_splits(None, item, tmp_path, 1, True, 0, ["--splits", str(tmp_path / "s.csv")])
    item = ev.LabelledSet("csv", tmp_path / "l.csv", tmp_path / "frames",
                          columns=ls.LabelColumns(video="clip", mos="dmos", dmos=True))
    options = finetune.set_options(item)  # what each split's train_lsvq.py reads it with
    config = tl.parse_args([*options, "--random-split"])
    assert (config.video_column, config.mos_column, config.dmos) == ("clip", "dmos", True)
    assert config.dataset == "csv" and config.labels == str(tmp_path / "l.csv")
