"""engine.fast_top_p: the candidate top-p keeps exactly the tokens vLLM's full-sort top-p keeps, falls back for
wide rows, and the plugin patches vLLM only when a selftrain engine asks. No engine is started here."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

import torch  # noqa: E402
from vllm.v1.sample.ops import topk_topp_sampler as sampler  # noqa: E402

from selftrain.engines import vllm_top_p  # noqa: E402


def _vllm_top_p(logits, k, p):
    return sampler.apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync=True)


def _zipf_logits(rows: int, vocab: int, alpha: float, seed: int) -> torch.Tensor:
    """Peaked rows like a language model's next-token logits (a few tokens hold most of the mass)."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float32)
    return torch.stack(
        [
            (-alpha * ranks.log() + 0.3 * torch.randn(vocab, generator=g))[torch.randperm(vocab, generator=g)]
            for _ in range(rows)
        ]
    )


@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0])
def test_same_tokens_kept_as_vllms_sort(alpha):
    logits = _zipf_logits(64, 8192, alpha, seed=int(alpha * 10)) / 0.8
    logits[:4] *= 0.01  # flat rows: their nucleus is wider than the candidates, so they take vLLM's path
    p = torch.full((64,), 0.95)
    p[::5] = 0.5
    expected = _vllm_top_p(logits.clone(), None, p)
    got = vllm_top_p.top_p_from_candidates(logits.clone(), None, p, _vllm_top_p, candidates=64)
    assert torch.equal(got, expected)
    kept = torch.isfinite(expected).sum(dim=1)
    assert kept[:4].min() > 64 and kept.min() < 64  # both paths were exercised


def test_top_k_and_no_filter_go_to_vllm_unchanged():
    calls = []

    def full_sort(logits, k, p):
        calls.append((k, p))
        return logits

    logits = torch.randn(2, 1000)
    vllm_top_p.top_p_from_candidates(logits, torch.tensor([5, 5]), torch.tensor([0.9, 0.9]), full_sort)
    vllm_top_p.top_p_from_candidates(logits, None, None, full_sort)
    assert len(calls) == 2


def test_plugin_patches_only_when_asked(monkeypatch):
    original = sampler.apply_top_k_top_p
    monkeypatch.delenv(vllm_top_p.ENV, raising=False)
    vllm_top_p.register()
    assert sampler.apply_top_k_top_p is original  # another vLLM user in this environment is untouched
    monkeypatch.setenv(vllm_top_p.ENV, "1")
    try:
        vllm_top_p.register()
        patched = sampler.apply_top_k_top_p
        assert patched is not original and patched.selftrain
        vllm_top_p.register()  # vLLM may load plugins more than once per process
        assert sampler.apply_top_k_top_p is patched
        logits = _zipf_logits(8, 4096, 2.0, seed=1)
        p = torch.full((8,), 0.95)
        assert torch.equal(patched(logits.clone(), None, p), _vllm_top_p(logits.clone(), None, p))
    finally:
        sampler.apply_top_k_top_p = original


def test_entry_point_is_declared_for_vllm():
    points = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(ep.value == "selftrain.engines.vllm_top_p:register" for ep in points)
