"""The torch twin of masked attention against an explicit float64 softmax."""
import pytest
import torch

from attninf.kernels import masked_attention_torch, running_mean

from reference import attention_f64


def _inputs(B, Hq, Hkv, S, D, dtype, gen):
    q = torch.randn(B, Hq, S, D, generator=gen).to(dtype)
    k = torch.randn(B, Hkv, S, D, generator=gen).to(dtype)
    v = torch.randn(B, Hkv, S, D, generator=gen).to(dtype)
    return q, k, v


@pytest.mark.parametrize("groups", [1, 3, 4])
@pytest.mark.parametrize("S", [1, 17, 64])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_float64(groups, S, causal):
    gen = torch.Generator().manual_seed(1000 * groups + S + causal)
    Hkv, D = 2, 16
    Hq = Hkv * groups
    q, k, v = _inputs(2, Hq, Hkv, S, D, torch.float32, gen)
    head_mask = torch.rand(2, Hq, generator=gen) < 0.4  # per-row masks, mixed
    for hm in (None, head_mask, head_mask[0]):
        out = masked_attention_torch(q, k, v, head_mask=hm, causal=causal)
        ref = attention_f64(q, k, v, hm, causal)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_masked_head_is_running_mean():
    gen = torch.Generator().manual_seed(7)
    q, k, v = _inputs(1, 6, 2, 13, 8, torch.float64, gen)
    hm = torch.tensor([False, True, False, False, False, True])
    out = masked_attention_torch(q, k, v, head_mask=hm)
    # head 1 belongs to kv group 0, head 5 to group 1 (GQA 3)
    for h, g in ((1, 0), (5, 1)):
        for t in range(13):
            torch.testing.assert_close(out[0, h, t], v[0, g, : t + 1].mean(0))
    # unmasked heads do not see the mask
    torch.testing.assert_close(out[:, ~hm], masked_attention_torch(q, k, v)[:, ~hm])


@pytest.mark.parametrize("bounds", [[0, 5, 6, 19, 30], [0, 30], [0, 0, 11, 30]])
def test_packed_documents(bounds):
    gen = torch.Generator().manual_seed(len(bounds))
    q, k, v = _inputs(1, 8, 2, 30, 16, torch.float32, gen)
    cu = torch.tensor(bounds)
    hm = torch.tensor([True, False, False, True, False, False, True, False])
    out = masked_attention_torch(q, k, v, head_mask=hm, cu_seqlens=cu)
    torch.testing.assert_close(out.double(), attention_f64(q, k, v, hm, True, cu), rtol=1e-5, atol=1e-5)
    # each document alone gives the same rows: nothing crosses a boundary
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            alone = masked_attention_torch(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], head_mask=hm)
            torch.testing.assert_close(out[:, :, s:e], alone)


def test_bf16_close_to_float64():
    gen = torch.Generator().manual_seed(3)
    q, k, v = _inputs(1, 4, 1, 33, 64, torch.bfloat16, gen)
    hm = torch.tensor([True, False, True, False])
    out = masked_attention_torch(q, k, v, head_mask=hm)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), attention_f64(q, k, v, hm), rtol=2e-2, atol=2e-2)


def test_bad_shapes():
    q = torch.zeros(1, 6, 8, 16)
    with pytest.raises(ValueError, match="multiple"):
        masked_attention_torch(q, torch.zeros(1, 4, 8, 16), torch.zeros(1, 4, 8, 16))
    with pytest.raises(ValueError, match="head_mask"):
        masked_attention_torch(q, torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 16), head_mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="cu_seqlens"):
        masked_attention_torch(q, torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 16), cu_seqlens=torch.tensor([0, 5]))


def test_running_mean_fp32_sums():
    v = torch.full((1, 1, 5000, 4), 0.1, dtype=torch.bfloat16)
    out = running_mean(v)
    torch.testing.assert_close(out.float(), v.float(), rtol=1e-2, atol=0)


def test_fp32_attention_on_a_gpu_takes_the_torch_path(monkeypatch):
    """At fp32 the Triton kernel's tiles spill (kernels/aot.py): the dispatcher
    sends float32 CUDA inputs to the torch twin and bf16 ones to the kernel."""
    import attninf.kernels as kernels

    class OnGpu(torch.Tensor):  # what the dispatcher sees of a CUDA tensor
        @property
        def is_cuda(self):
            return True

    taken = []
    monkeypatch.setattr(kernels, "masked_attention_torch", lambda *a, **k: taken.append("torch"))
    monkeypatch.setattr(kernels, "_use_triton", lambda t, what: taken.append("triton") or False)
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.zeros(1, 2, 4, 16, dtype=dtype).as_subclass(OnGpu)
        kernels.masked_attention(q, q, q)
    assert taken == ["torch", "triton", "torch"]  # bf16: asked for the kernel (refused here: no Triton GPU)


@pytest.mark.parametrize("window", [1, 4, 16, 40])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_window_and_softcap_match_float64(window, softcap):
    """A sliding window and soft-capped logits, packed and not, against the
    float64 softmax; a masked head averages V over the window only."""
    gen = torch.Generator().manual_seed(window * 10 + bool(softcap))
    q, k, v = _inputs(2, 6, 2, 33, 16, torch.float32, gen)
    q = q * 3  # logits large enough for the cap to matter
    hm = torch.rand(2, 6, generator=gen) < 0.5
    for cu in (None, torch.tensor([0, 9, 10, 33])):
        out = masked_attention_torch(q, k, v, hm, cu_seqlens=cu, window=window, softcap=softcap)
        ref = attention_f64(q, k, v, hm, True, cu, window=window, softcap=softcap)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # the masked head's output at t is the plain mean of V over (t - window, t]
    b, h = torch.nonzero(hm)[0].tolist()
    out = masked_attention_torch(q, k, v, hm, window=window)
    for t in (0, window - 1, 20, 32):
        if t < 33:
            torch.testing.assert_close(out[b, h, t], v[b, h // 3, max(0, t - window + 1):t + 1].mean(0))


def test_bad_window_and_softcap_refused():
    gen = torch.Generator().manual_seed(0)
    q, k, v = _inputs(1, 2, 2, 5, 8, torch.float32, gen)
    with pytest.raises(ValueError, match="window"):
        masked_attention_torch(q, k, v, window=0)
    with pytest.raises(ValueError, match="softcap"):
        masked_attention_torch(q, k, v, softcap=-1.0)
    with pytest.raises(ValueError, match="needs causal attention"):  # a bidirectional window is another rule
        masked_attention_torch(q, k, v, causal=False, window=3)
