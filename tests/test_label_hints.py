"""A label file given under the wrong --dataset: the error names the dataset whose columns it
has (and the command line exits 2 with that one line)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io

import train_lsvq
from dataloader import LabelFileError
from dagr.datasets import read_table


@pytest.fixture()
def files(tmp_path):
    konvid = tmp_path / "KoNViD_1k_mos.csv"
    pd.DataFrame({"flickr_id": [3337642103, 8536919744], "mos": [3.2, 4.1]}).to_csv(konvid, index=False)
    lsvq = tmp_path / "labels_train_test.csv"
    pd.DataFrame({"name": ["yfcc-batch1/722"], "mos": [61.2], "is_test": [False]}).to_csv(lsvq, index=False)
    youtube = tmp_path / "youtube.csv"
    pd.DataFrame({"vid": ["Gaming_360P-0c0a"], "MOS full": [3.9]}).to_csv(youtube, index=False)
    mat = tmp_path / "data.mat"
    scipy.io.savemat(mat, {"video_list": np.array([["A001.mp4"]], dtype=object), "mos": [[70.0]]})
    return {"konvid": konvid, "lsvq": lsvq, "youtube-ugc": youtube, "livevqc": mat}


@pytest.mark.parametrize("given, actual", [
    ("lsvq", "konvid"), ("konvid", "lsvq"), ("youtube-ugc", "konvid"), ("konvid", "youtube-ugc"),
    ("livevqc", "konvid"), ("konvid", "livevqc"), ("lsvq", "livevqc")])
def test_the_error_names_the_dataset_the_file_belongs_to(files, given, actual):
    with pytest.raises(LabelFileError, match=f"use --dataset {actual}$") as raised:
        read_table(given, files[actual])
    assert str(raised.value).startswith(str(files[actual]))


def test_konvid_hint_names_its_columns(files):
    with pytest.raises(LabelFileError) as raised:
        read_table("lsvq", files["konvid"])
    assert str(raised.value).endswith(
        "KoNViD_1k_mos.csv has the columns of konvid (flickr_id, mos): use --dataset konvid")


def test_a_file_of_no_known_dataset_gets_no_hint(tmp_path):
    other = tmp_path / "other.csv"
    pd.DataFrame({"clip": ["a"], "score": [1.0]}).to_csv(other, index=False)
    with pytest.raises(LabelFileError) as raised:
        read_table("konvid", other)
    assert "use --dataset" not in str(raised.value) and "it has: clip, score" in str(raised.value)


def test_the_trainer_exits_2_with_the_hint(files, tmp_path, capsys):
    code = train_lsvq.main(["--dataset", "lsvq", "--labels", str(files["konvid"]),
                            "--frames", str(tmp_path), "--out", str(tmp_path / "run"),
                            "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.rstrip().endswith("use --dataset konvid")
    assert len(err.strip().splitlines()) == 1
