"""train_sal.py --ablation (dagr/ablation.py): every variant trains, the table holds the mean and
spread over seeds of each run's best validation metrics, and a second call resumes instead of
starting again."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import train_sal
from dagr import ablation
from dagr.checkpoints import load_checkpoint
from dagr.global_context import write_global_context_set
from pictures import png_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def check_set(tmp_path_factory):
    return write_global_context_set(tmp_path_factory.mktemp("gc") / "GlobalContext", n_train=4,
                                    n_val=3, frames=4)


def argv(root, out, *options):
    return ["--root", str(root), "--out", str(out), "--saliency-width", "2", "--size", "24", "384",
            "--clip-len", "1", "--clips-per-video", "1", "--val-clips", "1", "--batch-size", "2",
            "--lr", "3e-3", "--warmup", "0.5", "--workers", "0", "--device", "cpu", *options]


@pytest.mark.slow
def test_every_variant_trains_and_the_table_summarises_the_seeds(check_set, tmp_path,
                                                                 monkeypatch):
    titles, drawn = [], train_sal.write_state_figure

    def recorded(ids, states, path, title, *rest):
        titles.append(title)
        return drawn(ids, states, path, title, *rest)

    monkeypatch.setattr(train_sal, "write_state_figure", recorded)
    names = ["baseline", "input", "attention", "attention_token_write"]
    assert train_sal.main(argv(check_set, tmp_path, "--epochs", "1", "--ablation", *names,
                               "--seeds", "0", "1")) == 0
    table = pd.read_csv(tmp_path / "ablation.csv")
    assert table["variant"].tolist()[:2] == ["centre prior", "spectral residual"]
    runs = table[table["seed"].notna()]  # the networks' runs, after the two references
    assert len(runs) == 8 and np.isfinite(table[["cc", "nss", "kld"]]).all().all()
    for name in names:  # the same data and settings, only the registers differ
        settings = load_checkpoint(tmp_path / name / "seed_1" / "best.pt")["settings"]
        assert settings["seed"] == 1 and settings["epochs"] == 1 and settings["saliency_width"] == 2
        losses = pd.read_csv(tmp_path / name / "seed_1" / "log.csv")["train_loss"]
        assert np.isfinite(losses).all()
    kwargs = load_checkpoint(tmp_path / "attention_token_write" / "seed_0" / "best.pt")["model_kwargs"]
    assert kwargs["register_write"] == "token" and kwargs["registers"] == train_sal.REGISTERS
    summary = json.loads((tmp_path / "ablation.json").read_text())
    baseline = runs[runs["variant"] == "baseline"]["cc"]
    assert summary[2]["variant"] == "baseline"
    assert summary[2]["cc_mean"] == pytest.approx(baseline.mean())
    assert summary[2]["cc_std"] == pytest.approx(baseline.std(ddof=1))
    assert summary[0]["cc_std"] is None and summary[0]["cc_last_mean"] is None
    markdown = (tmp_path / "ablation.md").read_text()
    assert ("| Saliency network | Seeds | CC | NSS | SIM | KLD | AUC-J | s-AUC | CC, last 3 "
            "epochs |") in markdown
    assert f"{baseline.mean():.3f} ± {baseline.std(ddof=1):.3f}" in markdown
    # the far-context test: the baseline's saliency at the odd disk ignores the far disks
    assert (runs.loc[runs["variant"] == "baseline", "far_change"] == 0).all()
    assert runs["odd_first"].between(0, 1).all()
    assert "| Far change | Odd first |" in markdown
    png_image(tmp_path / "ablation.png")
    png_image(tmp_path / "registers.png")
    # the figures name the run and the data set, not folders of the machine they ran on
    assert titles == ["register states of attention/seed_0 over 3 validation videos"]
    assert str(tmp_path) not in markdown and "(GlobalContext)" in markdown


def test_a_spread_over_one_seed_is_null_in_the_json(tmp_path):
    runs = pd.DataFrame([{"variant": name, "seed": 0, "cc": cc, "nss": 1.0, "best_epoch": 1,
                          "minutes": 0.5} for name, cc in (("baseline", 0.25), ("attention", 0.5))])
    ablation.write_results(runs, tmp_path, "one seed each")
    text = (tmp_path / "ablation.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert [row["cc_mean"] for row in summary] == [0.25, 0.5]
    assert all(row["cc_std"] is None and row["nss_std"] is None for row in summary)
    assert "0.250 |" in (tmp_path / "ablation.md").read_text()


@pytest.mark.slow
def test_the_ablation_resumes_where_it_stopped(check_set, tmp_path, capsys):
    chosen = ["baseline", "attention"]
    assert train_sal.main(argv(check_set, tmp_path, "--epochs", "1", "--ablation", *chosen,
                               "--seeds", "0")) == 0
    first_row = pd.read_csv(tmp_path / "baseline" / "seed_0" / "log.csv").iloc[0]
    done = (tmp_path / "attention" / "seed_0" / "best.pt").stat().st_mtime_ns
    (tmp_path / "baseline" / "seed_0" / "last.pt").unlink()  # as if stopped before its first save
    # two epochs now: the finished-at-one runs continue from their last.pt
    assert train_sal.main(argv(check_set, tmp_path, "--epochs", "2", "--ablation", *chosen,
                               "--seeds", "0")) == 0
    log = pd.read_csv(tmp_path / "attention" / "seed_0" / "log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert load_checkpoint(tmp_path / "attention" / "seed_0" / "last.pt")["epoch"] == 2
    capsys.readouterr()
    assert train_sal.main(argv(check_set, tmp_path, "--epochs", "2", "--ablation", *chosen,
                               "--seeds", "0")) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, kept") == 2
    assert pd.read_csv(tmp_path / "baseline" / "seed_0" / "log.csv").iloc[0]["epoch"] == 1
    assert first_row["epoch"] == 1
    assert (tmp_path / "attention" / "seed_0" / "best.pt").stat().st_mtime_ns >= done
    chosen_variants = [ablation.variants(4)[name] for name in chosen]
    assert ablation.collect(tmp_path, chosen_variants, [0], 2)["variant"].tolist() == chosen
    # a run stopped before its last epoch is not a result
    assert ablation.collect(tmp_path, chosen_variants, [0], 3).empty


def test_variants_change_only_the_registers():
    variants = ablation.variants(4)
    assert list(variants) == ["baseline", "input", "attention", "attention_enc1_read",
                              "attention_film", "attention_token_write", "attention_n1",
                              "attention_n8"]
    for variant in variants.values():
        assert set(variant.options) <= {"registers", "register_mode", "register_write",
                                        "read_levels"}
    # the earlier designs read the bottleneck only, as they were measured
    for name in ("attention_film", "attention_token_write"):
        assert variants[name].options["read_levels"] == ["bottleneck"]
    assert variants["attention_enc1_read"].options["read_levels"] == ["enc1", "bottleneck"]
    assert "read_levels" not in variants["attention"].options  # --read-levels: the design's
    assert variants["baseline"].options == {"registers": 0}
    assert variants["attention_n8"].options["registers"] == 8
