"""The Triton kernels against their torch twins and float64 references, on
CPU under the Triton interpreter (conftest sets TRITON_INTERPRET=1), or on a
GPU where there is one. Small shapes, odd lengths, fresh inputs per case,
outputs poisoned with NaN so that every element must be written."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from attninf.kernels import masked_attention_torch, token_nll_torch

from reference import attention_f64, nll_f64

triton = pytest.importorskip("triton")
from attninf.kernels.attention_triton import masked_attention_triton  # noqa: E402
from attninf.kernels.nll_triton import token_nll_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def _qkv(B, Hq, Hkv, S, D, dtype, seed, transposed=False):
    gen = torch.Generator().manual_seed(seed)
    if transposed:  # the (B, S, H, D) -> (B, H, S, D) views transformers passes in
        mk = lambda H: torch.randn(B, S, H, D, generator=gen).to(dtype).to(DEVICE).transpose(1, 2)  # noqa: E731
    else:
        mk = lambda H: torch.randn(B, H, S, D, generator=gen).to(dtype).to(DEVICE)  # noqa: E731
    return mk(Hq), mk(Hkv), mk(Hkv)


def _poisoned_like(q):
    return torch.full_like(q, float("nan"))


CASES = list(itertools.product(
    [torch.float32, torch.bfloat16, torch.float16],
    [64, 128],           # head dim
    [1, 3, 4],           # GQA ratio
))


@pytest.mark.parametrize("dtype,D,groups", CASES)
def test_attention_matches_reference(dtype, D, groups):
    # a constant per case, so a failure reproduces (hash() of a str is salted per process)
    seed = 1_000 * CASES.index((dtype, D, groups))
    Hkv = 2 if groups < 4 else 1
    Hq = Hkv * groups
    for S, causal in ((37, True), (1, True), (45, False)):
        q, k, v = _qkv(2, Hq, Hkv, S, D, dtype, seed + S, transposed=(S == 37))
        gen = torch.Generator().manual_seed(seed)
        hm = (torch.rand(2, Hq, generator=gen) < 0.5).to(DEVICE)
        hm[0, 0], hm[1, 0] = True, False  # masked and unmasked heads mixed, per row
        out = masked_attention_triton(q, k, v, hm, causal=causal, out=_poisoned_like(q))
        assert not out.isnan().any()
        rtol, atol = TOL[dtype]
        ref = attention_f64(q.cpu(), k.cpu(), v.cpu(), hm.cpu(), causal)
        torch.testing.assert_close(out.cpu().double(), ref, rtol=rtol, atol=atol)
        twin = masked_attention_torch(q, k, v, hm, causal=causal)
        torch.testing.assert_close(out.float(), twin.float(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_unmasked_equals_sdpa(dtype):
    q, k, v = _qkv(1, 6, 2, 53, 64, dtype, 11)
    out = masked_attention_triton(q, k, v, out=_poisoned_like(q))
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out.float(), ref, rtol=TOL[dtype][0], atol=TOL[dtype][1])


@pytest.mark.parametrize("bounds", [[0, 5, 6, 40, 71], [0, 71], [0, 1, 2, 3, 71], [0, 30, 30, 71]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_packed_documents(bounds, dtype):
    q, k, v = _qkv(1, 8, 2, 71, 64, dtype, len(bounds) * 7 + 1)
    cu = torch.tensor(bounds, dtype=torch.int32, device=DEVICE)
    hm = torch.tensor([True, False, False, True, False, True, False, False], device=DEVICE)
    out = masked_attention_triton(q, k, v, hm, cu_seqlens=cu, out=_poisoned_like(q), block_m=16, block_n=16)
    assert not out.isnan().any()
    ref = attention_f64(q.cpu(), k.cpu(), v.cpu(), hm.cpu(), True, cu.cpu())
    torch.testing.assert_close(out.cpu().double(), ref, rtol=TOL[dtype][0], atol=TOL[dtype][1])
    # a masked head's running mean restarts at each boundary
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            exp = v[0, 0, s:e].double().cumsum(0) / torch.arange(1, e - s + 1, device=DEVICE).view(-1, 1)
            torch.testing.assert_close(out[0, 0, s:e].double(), exp, rtol=TOL[dtype][0], atol=TOL[dtype][1])


def test_attention_small_blocks_many_tiles():
    """Many query and key tiles: the causal skip and the tile edges."""
    q, k, v = _qkv(1, 3, 1, 97, 64, torch.float32, 5)
    hm = torch.tensor([False, True, False], device=DEVICE)
    out = masked_attention_triton(q, k, v, hm, block_m=16, block_n=16, out=_poisoned_like(q))
    torch.testing.assert_close(out.cpu().double(), attention_f64(q.cpu(), k.cpu(), v.cpu(), hm.cpu()),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window,softcap", [(1, None), (7, None), (20, None), (None, 1.5), (16, 2.0)])
def test_attention_window_and_softcap(dtype, window, softcap):
    """A sliding window (shorter and longer than a tile) and soft-capped logits,
    packed and not, many tiles: against float64 and the torch twin."""
    q, k, v = _qkv(1, 6, 2, 71, 64, dtype, 31 + (window or 0))
    q = q * 2  # large logits, where the cap changes the softmax
    hm = torch.tensor([True, False, False, False, True, False], device=DEVICE)
    for cu in (None, torch.tensor([0, 5, 6, 40, 71], dtype=torch.int32, device=DEVICE)):
        out = masked_attention_triton(q, k, v, hm, cu_seqlens=cu, window=window, softcap=softcap,
                                      out=_poisoned_like(q), block_m=16, block_n=16)
        assert not out.isnan().any()
        ref = attention_f64(q.cpu(), k.cpu(), v.cpu(), hm.cpu(), True, None if cu is None else cu.cpu(),
                            window=window, softcap=softcap)
        torch.testing.assert_close(out.cpu().double(), ref, rtol=TOL[dtype][0], atol=TOL[dtype][1])
        twin = masked_attention_torch(q, k, v, hm, cu_seqlens=cu, window=window, softcap=softcap)
        torch.testing.assert_close(out.float(), twin.float(), rtol=TOL[dtype][0], atol=TOL[dtype][1])


def test_attention_rejects_bad_input():
    q, k, v = _qkv(1, 4, 2, 8, 64, torch.float32, 0)
    with pytest.raises(ValueError, match="multiple"):
        masked_attention_triton(q, k[:, :1].expand(1, 3, 8, 64), v[:, :1].expand(1, 3, 8, 64))
    q2, k2, v2 = _qkv(1, 2, 2, 8, 48, torch.float32, 0)
    with pytest.raises(ValueError, match="head dim 48"):
        masked_attention_triton(q2, k2, v2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,V,H,bias", [(37, 1000, 64, False), (5, 517, 96, True), (64, 300, 72, False)])
def test_token_nll_matches_reference(dtype, N, V, H, bias):
    gen = torch.Generator().manual_seed(N * V + H)
    hidden = torch.randn(N, H, generator=gen).to(dtype).to(DEVICE)
    weight = (torch.randn(V, H, generator=gen) * H ** -0.5 * 3).to(dtype).to(DEVICE)
    b = torch.randn(V, generator=gen).to(dtype).to(DEVICE) if bias else None
    targets = torch.randint(0, V, (N,), generator=gen).to(DEVICE)
    targets[1] = -100
    out = token_nll_triton(hidden, weight, targets, b, out=torch.full((N,), float("nan"), device=DEVICE))
    ref = nll_f64(hidden.cpu(), weight.cpu(), targets.cpu(), b.cpu() if bias else None)
    assert out.dtype == torch.float32 and not out.isnan().any()
    assert out[1] == 0
    # fp32 accumulation: the error is the inputs' rounding, not the vocab size
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-4)
    twin = token_nll_torch(hidden, weight, targets, b)
    torch.testing.assert_close(out, twin, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_nll_softcap(dtype):
    """Gemma 2's capped output logits: c * tanh(logits / c) before the softmax."""
    gen = torch.Generator().manual_seed(3)
    hidden = (torch.randn(29, 64, generator=gen) * 4).to(dtype).to(DEVICE)
    weight = torch.randn(700, 64, generator=gen).to(dtype).to(DEVICE)
    targets = torch.randint(0, 700, (29,), generator=gen).to(DEVICE)
    ref = nll_f64(hidden.cpu(), weight.cpu(), targets.cpu(), softcap=5.0)
    assert not torch.allclose(ref, nll_f64(hidden.cpu(), weight.cpu(), targets.cpu()), atol=1e-2)  # the cap matters
    out = token_nll_triton(hidden, weight, targets, softcap=5.0)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(token_nll_torch(hidden, weight, targets, softcap=5.0).cpu().double(), ref,
                               rtol=1e-5, atol=1e-4)


def test_token_nll_torch_chunks_and_float64():
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(50, 32, generator=gen), torch.randn(777, 32, generator=gen)
    targets = torch.randint(0, 777, (50,), generator=gen)
    ref = nll_f64(hidden, weight, targets)
    for chunk in (1, 7, 50, None):
        out = token_nll_torch(hidden, weight, targets, chunk_tokens=chunk)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        token_nll_torch(hidden, weight, targets),
        F.cross_entropy(hidden @ weight.T, targets, reduction="none"), rtol=1e-5, atol=1e-5)


# int64 pointer offsets, on a real storage of 2**32 + a few thousand float16
# elements: 8 GiB of address space of which only a few KiB are ever written, so
# on a CPU it costs no real memory (the interpreter reads the storage in place).
# The views put stride BIG_STRIDE (< 2**31, so Triton passes it as int32) on one
# dim of size 3: index 2 times that stride passes 2**31, and int32 offsets would
# land 2**32 elements too low, still inside this storage because the views start
# at 2**31, so a regression gives wrong numbers and NaN-poisoned output, not a crash.
BIG_STRIDE = 2**30 + 8192
VIEW_START = 2**31
SLOT = 2048  # elements of one view per index of its big dim; views sit SLOT apart


@pytest.fixture
def huge_storage():
    n = VIEW_START + 4 * SLOT + 2 * BIG_STRIDE  # room for four views
    if DEVICE == "cuda" and torch.cuda.get_device_properties(0).total_memory < 16 * 2**30:
        pytest.skip("the GPU has too little memory for an 8 GiB storage")
    try:
        return torch.empty(n, dtype=torch.float16, device=DEVICE)  # never touched as a whole
    except (RuntimeError, MemoryError) as e:
        pytest.skip(f"cannot reserve 8 GiB of address space: {e}")


def _huge_view(buf, slot, shape, big_dim, gen):
    """A view of `shape` (shape[big_dim] == 3) with stride BIG_STRIDE on big_dim
    and the other dims packed in order, filled with fresh normal values."""
    small = [d for d in range(len(shape)) if d != big_dim]
    strides, step = [0] * len(shape), 1
    for d in reversed(small):
        strides[d], step = step, step * shape[d]
    assert step <= SLOT and shape[big_dim] == 3
    strides[big_dim] = BIG_STRIDE
    view = buf.as_strided(shape, strides, VIEW_START + slot * SLOT)
    view.copy_(torch.randn(shape, generator=gen))
    return view


@pytest.mark.parametrize("big_dim", [0, 1, 2])  # batch, head or sequence carries the huge stride
def test_attention_int64_offsets(huge_storage, big_dim):
    """Offsets past 2**31 elements on q, k, v and out, through the batch, head
    or row index."""
    gen = torch.Generator().manual_seed(big_dim)
    shape = [1, 2, 16, 16]  # (B, H, S, D)
    shape[big_dim] = 3
    q, k, v, out = (_huge_view(huge_storage, i, shape, big_dim, gen) for i in range(4))
    out.fill_(float("nan"))
    B, H = shape[:2]
    hm = torch.zeros(B, H, dtype=torch.bool, device=DEVICE)
    hm[:, 0] = True  # head 0 takes the masked path (reads only v), the others read q and k
    res = masked_attention_triton(q, k, v, hm, out=out, block_m=16, block_n=16)
    assert res.data_ptr() == out.data_ptr()
    assert not out.isnan().any()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    torch.testing.assert_close(out.cpu().double(), attention_f64(q.cpu(), k.cpu(), v.cpu(), hm.cpu()),
                               rtol=TOL[torch.float16][0], atol=TOL[torch.float16][1])


def test_token_nll_int64_offsets(huge_storage):
    """Token 2 of hidden and vocabulary row 2 of weight lie past 2**31 elements."""
    gen = torch.Generator().manual_seed(0)
    hidden = _huge_view(huge_storage, 0, (3, 64), 0, gen)
    weight = _huge_view(huge_storage, 1, (3, 64), 0, gen)
    targets = torch.tensor([2, 0, 2], device=DEVICE)
    out = token_nll_triton(hidden, weight, targets, out=torch.full((3,), float("nan"), device=DEVICE))
    ref = nll_f64(hidden.cpu().contiguous(), weight.cpu().contiguous(), targets.cpu())
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-4)
