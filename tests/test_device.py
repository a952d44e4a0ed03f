"""dagr/device.py: --device takes what torch.device parses and is present here, and refuses
anything else in one line with exit status 2 while the options are parsed, before a model
loads; the Python API raises instead (test_api.py)."""
from __future__ import annotations

import pytest
import torch

import evaluate_vqa
import inference_sal
from dagr.device import ARGUMENT, OPTION, check_device, device_option
from test_help import SCRIPTS, script_parser_of


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine where PyTorch sees no CUDA GPU and no Apple GPU, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("name, message", [
    ("cuda", "error: --device cuda: PyTorch sees no CUDA GPU on this machine; "
             "use --device cpu"),
    ("cuda:3", "error: --device cuda:3: PyTorch sees no CUDA GPU on this machine; "
               "use --device cpu"),
    ("mps", "error: --device mps: PyTorch sees no Apple GPU (MPS) on this machine; "
            "use --device cpu"),
    ("gpu", "error: --device gpu: not a device name PyTorch knows (cpu, cuda, cuda:N, mps, ...)"),
])
def test_a_device_that_is_not_here_is_refused_in_one_line_before_the_model_loads(
        no_gpu, tmp_path, capsys, name, message):
    with pytest.raises(SystemExit) as stopped:  # the model file does not exist: never opened
        evaluate_vqa.main(["--model", str(tmp_path / "absent.safetensors"), "--videos",
                           str(tmp_path), "--out", str(tmp_path / "s.csv"), "--device", name])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == message + "\n"


def test_a_gpu_index_beyond_those_present_names_the_ones_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1", OPTION) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"--device cuda:3: PyTorch sees 2 CUDA GPU\(s\) here, "
                                           r"numbered from cuda:0 to cuda:1"):
        check_device("cuda:3", OPTION)


def test_what_torch_device_parses_and_is_here_is_taken(no_gpu):
    assert device_option("cpu") == "cpu" and device_option("cpu:0") == "cpu:0"
    assert check_device(torch.device("cpu"), ARGUMENT) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="device='xpu': PyTorch sees no xpu device"):
        check_device("xpu", ARGUMENT)


@pytest.mark.parametrize("module", [m for m in SCRIPTS if m.__name__ != "extract_frame"],
                         ids=lambda m: m.__name__)
def test_every_script_that_runs_a_network_checks_its_device_while_parsing(module, monkeypatch):
    parser = script_parser_of(module, monkeypatch)
    device = next(a for a in parser._actions if a.dest == "device")
    assert device.type is device_option


def test_inference_sal_refuses_mps_off_a_mac_before_loading(no_gpu, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        inference_sal.parse_args(["--checkpoint", str(tmp_path / "absent.pt"), "--frames",
                                  str(tmp_path), "--device", "mps"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
