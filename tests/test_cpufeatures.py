"""The half-precision warning on CPUs without native bf16 kernels (selftrain.cpufeatures)."""

from __future__ import annotations

import logging

import pytest

from selftrain import cpufeatures


@pytest.fixture
def x86(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cpufeatures.platform, "machine", lambda: "x86_64")

    def with_flags(*flags: str) -> None:
        monkeypatch.setattr(cpufeatures, "cpu_flags", lambda: frozenset(["sse2", "avx2", *flags]))

    return with_flags


def test_a_zen2_like_cpu_has_no_native_bf16_and_the_setting_is_named(x86, caplog) -> None:
    x86()
    assert cpufeatures.native_bf16() is False
    with caplog.at_level(logging.WARNING, logger="selftrain.cpufeatures"):
        assert cpufeatures.warn_half_precision_on_cpu("model.dtype", "bfloat16")
    assert "model.dtype=bfloat16" in caplog.text and "model.dtype=float32" in caplog.text


@pytest.mark.parametrize("flag", cpufeatures.BF16_FLAGS)
def test_a_cpu_with_bf16_kernels_gets_no_warning(x86, flag: str) -> None:
    x86(flag)
    assert cpufeatures.native_bf16() is True
    assert not cpufeatures.warn_half_precision_on_cpu("model.dtype", "bfloat16")


def test_float32_never_warns_and_unknown_cpus_are_not_guessed(x86, monkeypatch: pytest.MonkeyPatch) -> None:
    x86()
    assert not cpufeatures.warn_half_precision_on_cpu("model.dtype", "float32")
    monkeypatch.setattr(cpufeatures.platform, "machine", lambda: "aarch64")
    assert cpufeatures.native_bf16() is None
    assert not cpufeatures.warn_half_precision_on_cpu("training.bf16", "bfloat16")
