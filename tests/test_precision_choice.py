"""Choosing the autocast dtype: "auto" and bfloat16 on CPUs with and without bfloat16 instructions."""

import warnings

import pytest
import torch

from maskrcnn import precision


@pytest.mark.parametrize("fast", [True, False])
def test_auto_picks_bfloat16_on_the_cpu_only_where_it_is_fast(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: fast)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = precision.autocast_dtype("auto", torch.device("cpu"))
        assert got == (torch.bfloat16 if fast else None)
        assert precision.autocast_dtype("auto", torch.device("cuda")) == torch.float16
        assert precision.autocast_dtype("fp32", torch.device("cpu")) is None


def test_explicit_bfloat16_on_a_cpu_without_it_warns_and_is_kept(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)
    with pytest.warns(RuntimeWarning, match="solver.precision bf16: this CPU has no bfloat16 instructions"):
        got = precision.autocast_dtype("bf16", torch.device("cpu"), "solver.precision")
    assert got == torch.bfloat16


def test_explicit_bfloat16_on_a_cpu_with_it_is_silent(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
        with precision.autocast_context("bf16", torch.device("cpu")):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_cpu_has_fast_bfloat16_follows_torchs_instruction_checks(monkeypatch):
    for avx512_bf16, amx, want in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert precision.cpu_has_fast_bfloat16() is want


def test_float16_on_the_cpu_warns_with_the_measured_slowdown():
    with pytest.warns(RuntimeWarning, match=r"solver.precision fp16 on the CPU: .* 3.8 s against 0.34 s"):
        assert precision.autocast_dtype("fp16", torch.device("cpu"), "solver.precision") == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.autocast_dtype("fp16", torch.device("cuda")) == torch.float16


def test_strict_refuses_what_would_only_warn(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)
    with precision.strict_precision():
        with pytest.raises(ValueError, match="fp16 on the CPU.*refused under --strict"):
            precision.autocast_dtype("fp16", torch.device("cpu"), "--precision")
        with pytest.raises(ValueError, match="no bfloat16 instructions.*refused under --strict"):
            precision.autocast_dtype("bf16", torch.device("cpu"))
        assert precision.autocast_dtype("fp32", torch.device("cpu")) is None
    with pytest.warns(RuntimeWarning):  # outside the block: a warning again
        precision.autocast_dtype("fp16", torch.device("cpu"))
