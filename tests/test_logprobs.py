"""logprobs_entropy / logprobs_entropy_from_logits against the float64 reference.

Both backends run on the ``device`` fixture: "torch" (the chunked path; on fp32 CPU chunks its row
passes run in C++, and "torch-ops" below is the same backend with those passes as torch ops) and
"triton" (on a GPU, or
through Triton's interpreter on a CPU machine, fp32/fp16 only there: bf16 tl.dot is broken in the
interpreter). Shapes stay small
because the interpreter is slow; V = 151936 runs with tiny M. Tolerances: fp32 inputs within 1e-5
of the reference's scale (1e-4 for quantities reduced over V); 16-bit inputs by the flash-attention
rule |kernel - ref| <= 2 |torch-lowprec - ref| + atol.
"""
import pytest
import torch
from conftest import poison

from onerl_kernels import logprobs_chunked, logprobs_triton, reference
from onerl_kernels.logprobs import (_lpe, _lpe_bwd, _lpel, _lpel_bwd, _rows3d, logprobs_entropy,
                                    logprobs_entropy_from_logits)

BACKENDS = ["torch", "torch-ops", "triton"]
# numpy (the interpreter) warns about inf/nan produced in lanes that tl.where then discards
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _api(backend: str) -> str:
    """The backend argument of the public functions ("torch-ops" is "torch" with USE_CPP off)."""
    return "torch" if backend == "torch-ops" else backend


@pytest.fixture(autouse=True)
def poisoned(monkeypatch, request):
    """Every buffer the kernels allocate starts as NaN: a missed write shows up. The "torch-ops"
    cases run the chunked path's torch row ops instead of the C++ row passes."""
    params = getattr(request.node, "callspec", None)
    if params is not None and params.params.get("backend") == "torch-ops":
        monkeypatch.setattr(logprobs_chunked, "USE_CPP", False)
    def alloc(*shape, **kw):
        return poison(torch.empty(*shape, **kw))
    monkeypatch.setattr(logprobs_triton, "_alloc", alloc)
    monkeypatch.setattr(logprobs_chunked, "_alloc", alloc)


def _inputs(M, H, V, dtype=torch.float32, seed=0, n_ignored=0, scale=1.0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(M, H, generator=g) * scale).to(dtype)
    w = torch.randn(V, H, generator=g).to(dtype)
    y = torch.randint(0, V, (M,), generator=g)
    y[torch.randperm(M, generator=g)[:n_ignored]] = -100
    g_lp, g_h = torch.randn(M, generator=g), torch.randn(M, generator=g)
    return tuple(t.to(device) for t in (h, w, y, g_lp, g_h))


def _run(fn, h, w, y, g_lp, g_h, **kw):
    """(logp, entropy, dh, dw) of loss = sum(g_lp logp + g_h entropy)."""
    h = h.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    lp, ent = fn(h, w, y, **kw)
    loss = (lp * g_lp.to(lp.dtype)).sum()
    if ent.numel():
        loss = loss + (ent * g_h.to(ent.dtype)).sum()
    loss.backward()
    return lp.detach(), ent.detach(), h.grad, w.grad


def _ref(h, w, y, g_lp, g_h, temperature=1.0, ignore_index=-100, need_entropy=True):
    def fn(h, w, y):
        lp, ent = reference.logprobs_entropy(h, w, y, temperature, ignore_index)
        return lp, ent if need_entropy else ent.new_empty(0)
    return _run(fn, h.double(), w.double(), y, g_lp.double(), g_h.double())


def _eager_lowprec(h, w, y, g_lp, g_h, temperature=1.0):
    """What plain torch computes in the inputs' own dtype (logits rounded to it, too)."""
    def fn(h, w, y):
        s = (h @ w.T) / temperature
        lsm = torch.log_softmax(s, -1)
        return lsm.gather(1, y.clamp(min=0)[:, None])[:, 0], -(lsm.exp() * lsm).sum(-1)
    return _run(fn, h, w, y, g_lp, g_h)


def _close(got, want, rtol, what=""):
    err = (got.double() - want).abs().max().item() if want.numel() else 0.0
    bound = rtol * max(want.abs().max().item() if want.numel() else 0.0, 1.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def _check_fp32(got, want, what="", rtol=1e-5):
    for name, g, r in zip(("logp", "entropy", "dhidden", "dweight"), got, want):
        _close(g, r, rtol, f"{what} {name}")


def _check_flash(got, want, low, atol, what=""):
    for name, g, r, lo in zip(("logp", "entropy", "dhidden", "dweight"), got, want, low):
        err = (g.double() - r).abs().max().item()
        bound = 2 * (lo.double() - r).abs().max().item() + atol
        assert err <= bound, f"{what} {name}: max error {err:.3g} > {bound:.3g}"


# ----------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fp32_matches_reference(backend, temperature, device):
    # odd M and V (V not a multiple of any tile), several splits and backward slabs, ignored rows
    h, w, y, g_lp, g_h = _inputs(37, 40, 1000, n_ignored=5, device=device)
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=temperature,
               backend=_api(backend))
    want = _ref(h, w, y, g_lp, g_h, temperature)
    _check_fp32(got, want, backend)
    ign = y == -100
    assert (got[0][ign] == 0).all() and (got[1][ign] == 0).all()


# bf16 tl.dot is wrong in Triton's interpreter: that case runs on a GPU only (gpu marker).
@pytest.mark.parametrize("backend,dtype", [
    ("torch", torch.bfloat16), ("torch", torch.float16), ("triton", torch.float16),
    pytest.param("triton", torch.bfloat16, marks=pytest.mark.gpu)])
def test_16bit_flash_rule(backend, dtype, device):
    h, w, y, g_lp, g_h = _inputs(33, 48, 700, dtype=dtype, n_ignored=3, scale=0.5, device=device)
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6, backend=_api(backend))
    assert got[0].dtype == torch.float32 and got[2].dtype == dtype and got[3].dtype == dtype
    want = _ref(h, w, y, g_lp, g_h, 0.6)
    low = _eager_lowprec(h, w, y, g_lp, g_h, 0.6)
    low = tuple(torch.where(y == -100, 0, t) if i < 2 else t for i, t in enumerate(low))
    _check_flash(got, want, low, atol=1e-3, what=f"{backend} {dtype}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_peaked_and_all_negative(backend, device):
    # peaked: the target's logit towers over the rest (p_target ~ 1, entropy ~ 0)
    h, w, y, g_lp, g_h = _inputs(20, 32, 500, seed=1, device=device)
    h = 12 * w[y] / w[y].norm(dim=1, keepdim=True)
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, backend=_api(backend))
    want = _ref(h, w, y, g_lp, g_h)
    assert (want[0] > -1e-3).all() and (want[1] < 1e-2).all()  # the case is what it claims
    assert (got[1] >= 0).all() and all(torch.isfinite(g).all() for g in got)
    # logp ~ -1e-4 while the logits are ~70 (one fp32 ulp ~ 8e-6): judge against fp32 eager
    _check_flash(got, want, _eager_lowprec(h, w, y, g_lp, g_h), atol=1e-6, what="peaked")
    # all logits strongly negative (about -300): a large shared offset must not cost accuracy
    h, w, y, g_lp, g_h = _inputs(20, 32, 500, seed=2, device=device)
    h[:, 0], w[:, 0] = 1.0, -300.0
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6, backend=_api(backend))
    want = _ref(h, w, y, g_lp, g_h, 0.6)
    low = _eager_lowprec(h, w, y, g_lp, g_h, 0.6)
    _check_flash(got, want, low, atol=1e-4, what=f"{backend} all-negative")


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_vocab(backend, device):
    M = 2 if backend == "triton" and device.type == "cpu" else 64  # the interpreter is slow
    h, w, y, g_lp, g_h = _inputs(M, 16, 151936, seed=3, device=device)
    y[0] = 151935  # the last column
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6, backend=_api(backend))
    _check_fp32(got, _ref(h, w, y, g_lp, g_h, 0.6), backend, rtol=1e-4)  # sums over 151936


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_row_and_edge_targets(backend, device):
    h, w, y, g_lp, g_h = _inputs(1, 24, 130, seed=4, device=device)
    _check_fp32(_run(logprobs_entropy, h, w, y, g_lp, g_h, backend=_api(backend)),
                _ref(h, w, y, g_lp, g_h), "M=1")
    # every row ignored: zeros and zero gradients
    h, w, y, g_lp, g_h = _inputs(5, 24, 130, seed=5, device=device)
    y[:] = 7
    lp, ent, dh, dw = _run(logprobs_entropy, h, w, y, g_lp, g_h, ignore_index=7,
                           backend=_api(backend))
    assert not lp.any() and not ent.any() and not dh.any() and not dw.any()
    # a target out of range (and not ignore_index) gives NaN, no host sync needed to flag it
    y = torch.tensor([3, 130, -5, -100, 0], device=device)
    lp, ent = logprobs_entropy(h, w, y, backend=_api(backend))
    assert lp[1].isnan() and lp[2].isnan() and lp[3] == 0 and torch.isfinite(lp[[0, 4]]).all()
    # M = 0
    lp, ent = logprobs_entropy(h[:0], w, y[:0], backend=_api(backend))
    assert lp.shape == (0,) and ent.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_need_entropy_false(backend, device):
    h, w, y, g_lp, g_h = _inputs(19, 32, 300, seed=6, n_ignored=2, device=device)
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, need_entropy=False, backend=_api(backend))
    assert got[1].shape == (0,)
    want = _ref(h, w, y, g_lp, g_h, need_entropy=False)
    _close(got[0], want[0], 1e-5, "logp")
    _close(got[2], want[2], 1e-5, "dh")
    _close(got[3], want[3], 1e-5, "dw")


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs_and_frozen_params(backend, device):
    """Column-major hidden and weight views, int32 targets, and only one input requiring grad."""
    h, w, y, g_lp, g_h = _inputs(13, 24, 300, seed=15, n_ignored=1, device=device)
    hc, wc = h.T.contiguous().T, w.T.contiguous().T  # same values, strides (1, M) and (1, V)
    assert hc.stride() == (1, 13) and wc.stride() == (1, 300)
    got = _run(lambda a, b, t: logprobs_entropy(a, b, t.int(), backend=_api(backend)),
               hc, wc, y, g_lp, g_h)
    want = _ref(h, w, y, g_lp, g_h)
    _check_fp32(got, want, "strided")
    for frozen in ("hidden", "weight"):
        a = h.clone().requires_grad_(frozen != "hidden")
        b = w.clone().requires_grad_(frozen != "weight")
        lp, ent = logprobs_entropy(a, b, y, backend=_api(backend))
        (lp * g_lp + ent * g_h).sum().backward()
        assert (a.grad is None) == (frozen == "hidden") and (b.grad is None) == (frozen == "weight")
        _close(b.grad if a.grad is None else a.grad, want[3] if a.grad is None else want[2], 1e-5,
               f"frozen {frozen}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_tied_weights(backend, device):
    """The LM head is also the embedding: both uses' gradients add up on the one Parameter."""
    V, H, M = 200, 32, 17
    g = torch.Generator().manual_seed(7)
    emb = torch.randn(V, H, generator=g).to(device)
    ids = torch.randint(0, V, (M,), generator=g).to(device)
    y = torch.randint(0, V, (M,), generator=g).to(device)
    mix = (torch.randn(H, H, generator=g) / H ** 0.5).to(device)

    def loss_of(fn, E):
        h = torch.tanh(E[ids] @ mix)  # the same weight used in an embedding lookup
        lp, ent = fn(h, E, y)
        return (lp + 0.3 * ent).sum()

    E = emb.clone().requires_grad_()
    loss_of(lambda h, w, y: logprobs_entropy(h, w, y, temperature=0.6, backend=_api(backend)), E) \
        .backward()
    E64 = emb.double().requires_grad_()
    mix = mix.double()
    loss_of(lambda h, w, y: reference.logprobs_entropy(h, w, y, 0.6), E64).backward()
    _close(E.grad, E64.grad, 1e-5, "tied grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("need_entropy", [True, False])
def test_from_logits_shifted_view(backend, need_entropy, device):
    B, L, V = 3, 6, 257
    g = torch.Generator().manual_seed(8)
    base = (torch.randn(B, L + 1, V, generator=g) * 3).to(device).requires_grad_()
    ids = torch.randint(0, V, (B, L + 1), generator=g).to(device)
    ids[0, 2] = -100
    logits, targets = base[:, :-1], ids[:, 1:]  # shifted by one: no copy
    assert _rows3d(logits).data_ptr() == logits.data_ptr() and not logits.is_contiguous()
    lp, ent = logprobs_entropy_from_logits(logits, targets, temperature=0.6,
                                           need_entropy=need_entropy, backend=_api(backend))
    assert lp.shape == (B, L) and ent.shape == ((B, L) if need_entropy else (0,))
    gl, gh = torch.randn(B, L, generator=g).to(device), torch.randn(B, L, generator=g).to(device)
    loss = (lp * gl).sum() + ((ent * gh).sum() if need_entropy else 0)
    loss.backward()
    b64 = base.detach().double().requires_grad_()
    rlp, rent = reference.logprobs_entropy_from_logits(b64[:, :-1], targets, 0.6)
    ((rlp * gl.double()).sum() + ((rent * gh.double()).sum() if need_entropy else 0)).backward()
    _close(lp, rlp, 1e-5, "logp")
    if need_entropy:
        _close(ent, rent, 1e-5, "entropy")
    _close(base.grad, b64.grad, 1e-5, "dlogits")
    assert not base.grad[:, -1].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_logits_fp16_and_peaked(backend, device):
    g = torch.Generator().manual_seed(9)
    z = torch.randn(9, 333, generator=g) * 4
    y = torch.randint(0, 333, (9,), generator=g)
    z[torch.arange(9), y] = 60.0  # p_target ~ 1
    z[3] -= 400.0  # one row all strongly negative
    zh, y = z.half().to(device), y.to(device)
    want = reference.logprobs_entropy_from_logits(zh.double(), y)
    got = logprobs_entropy_from_logits(zh, y, backend=_api(backend))
    for a, b in zip(got, want):  # fp16 inputs are exact in fp32: an fp32 tolerance applies
        assert (a.double() - b).abs().max() <= 1e-5 * max(b.abs().max(), 1) + 1e-6


# ----------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_invariance(backend, device):
    """A row's results (logp, entropy, its dX row) are bitwise the same alone and in a batch.

    Through the interpreter tl.dot is numpy's matmul, whose BLAS rounds a row differently at some
    positions of a tile (a property of the emulator, not of the kernel): there the row keeps its
    position in its tile while M, the other rows, the splits and the backward slabs all change
    (a row at position 0 runs alone). test_gpu_hidden_path checks any position on hardware."""
    h, w, y, g_lp, g_h = _inputs(37, 40, 1000, seed=10, n_ignored=3, device=device)
    full = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6, backend=_api(backend))
    tile = 32 if backend == "triton" and device.type == "cpu" else 1
    other = _inputs(40, 40, 1000, seed=99, device=device)
    for i in (0, 21, 32, 36):
        pos = i % tile  # the row's place in the small batch
        sub = [torch.cat([o[:pos], t[i:i + 1]]) for o, t in zip(other, (h, w, y, g_lp, g_h))]
        sub[1] = w
        one = _run(logprobs_entropy, *sub, temperature=0.6, backend=_api(backend))
        for a, b in zip(one[:3], full[:3]):
            assert torch.equal(a[pos], b[i]), f"row {i} differs alone vs in the batch"
    again = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6, backend=_api(backend))
    for a, b in zip(again, full):
        assert torch.equal(a, b)  # run to run, dW included
    z = h @ w.T  # the logits path: one program (or padded block) per row
    zf = logprobs_entropy_from_logits(z, y, backend=_api(backend))
    z1 = logprobs_entropy_from_logits(z[21:22], y[21:22], backend=_api(backend))
    assert torch.equal(zf[0][21:22], z1[0]) and torch.equal(zf[1][21:22], z1[1])


# ----------------------------------------------------------------------------- registration


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend, device):
    backend = _api(backend)
    h, w, y, g_lp, g_h = _inputs(9, 16, 150, seed=11, n_ignored=2, device=device)
    hg, wg = h.clone().requires_grad_(), w.clone().requires_grad_()
    torch.library.opcheck(_lpe, (hg, wg, y, 0.6, True, -100, backend))
    torch.library.opcheck(_lpe, (h, w, y, 1.0, False, -100, backend))
    lp, _, st = _lpe(h, w, y, 0.6, True, -100, backend)
    torch.library.opcheck(_lpe_bwd, (g_lp, g_h, h, w, y, lp, st, 0.6, -100, True, True, backend))
    torch.library.opcheck(_lpe_bwd, (g_lp, None, h, w, y, lp, st, 0.6, -100, False, True,
                                     backend))
    z = (h @ w.T).view(3, 3, -1)
    yz = y.view(3, 3)
    torch.library.opcheck(_lpel, (z.clone().requires_grad_(), yz, 0.6, True, -100, backend))
    lp, _, st = _lpel(z, yz, 0.6, True, -100, backend)
    torch.library.opcheck(_lpel_bwd, (g_lp.view(3, 3), g_h.view(3, 3), z, yz, lp, st, 0.6,
                                      -100, backend))


@pytest.mark.parametrize("backend,compiler", [("torch", "inductor"), ("triton", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler, device):
    """The public functions trace without graph breaks; the ops stay opaque in the graph (the
    Triton path through the interpreter traces too; aot_eager keeps that case short)."""
    h, w, y, g_lp, g_h = _inputs(21, 16, 300, seed=12, n_ignored=2, device=device)

    def step(h, w, y):
        lp, ent = logprobs_entropy(h, w, y, temperature=0.6, backend=_api(backend))
        lz, ez = logprobs_entropy_from_logits((h @ w.T)[None], y[None], need_entropy=False,
                                              backend=_api(backend))
        return (lp * g_lp).sum() + (ent * g_h).sum() + lz.sum(), lp, ent

    compiled = torch.compile(step, fullgraph=True, backend=compiler)
    hc, wc = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss, lp, ent = compiled(hc, wc, y)
    loss.backward()
    he, we = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss_e, lp_e, ent_e = step(he, we, y)
    loss_e.backward()
    assert torch.equal(lp, lp_e) and torch.equal(ent, ent_e)
    torch.testing.assert_close(hc.grad, he.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wc.grad, we.grad, rtol=1e-5, atol=1e-6)


def test_cpp_row_passes_match_torch_ops(monkeypatch):
    """The C++ row passes (fp32 CPU chunks) against the torch row ops they replace: several vocab
    chunks (V = 5000: a 4096 chunk and a 904 one, not a multiple of 8), a partial row block,
    ignored rows, a peaked row, an all-negative row, T = 0.6, entropy on and off; and they do run."""
    h, w, y, g_lp, g_h = _inputs(300, 24, 5000, seed=21, n_ignored=7)
    h[3] = 15 * w[y[3]] / w[y[3]].norm()            # peaked
    h[4, 0], w[:, 0] = 1.0, w[:, 0] - 300.0         # every logit of row 4 about -300 / T
    calls, real = {"online": 0, "dlogits": 0}, logprobs_chunked._C
    assert real is not None and hasattr(real, "lpe_online_cpu"), "the extension lacks the passes"

    class Counting:  # the extension, with its two entry points counted
        def __getattr__(self, name):
            return getattr(real, name)

        def lpe_online_cpu(self, *a):
            calls["online"] += 1
            return real.lpe_online_cpu(*a)

        def lpe_dlogits_cpu(self, *a):
            calls["dlogits"] += 1
            return real.lpe_dlogits_cpu(*a)

    for need_entropy in (True, False):
        with monkeypatch.context() as m:
            m.setattr(logprobs_chunked, "_C", Counting())
            fast = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6,
                        need_entropy=need_entropy, backend="torch")
        with monkeypatch.context() as m:
            m.setattr(logprobs_chunked, "USE_CPP", False)
            ops = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6,
                       need_entropy=need_entropy, backend="torch")
        want = _ref(h, w, y, g_lp, g_h, 0.6, need_entropy=need_entropy)
        for name, a, b, r in zip(("logp", "entropy", "dhidden", "dweight"), fast, ops, want):
            # no worse than the torch ops vs float64 (the -300 column makes dX a cancelling sum)
            err_fast, err_ops = ((t.double() - r).abs().max().item() if r.numel() else 0.0
                                 for t in (a, b))
            assert err_fast <= 2 * err_ops + 1e-6, f"{name}: {err_fast:.3g} vs {err_ops:.3g}"
    passes = 2 * -(-5000 // logprobs_chunked._COLS) * -(-300 // logprobs_chunked._ROWS)
    assert calls["online"] == passes and calls["dlogits"] == passes  # 2 runs x chunks x blocks
    # a target outside [0, V) gives NaN on the C++ path too
    lp, _ = logprobs_entropy(h[:3], w, torch.tensor([1, 5000, -3]), backend="torch")
    assert torch.isfinite(lp[0]) and lp[1:].isnan().all()


def test_gradcheck_float64(device):
    h, w, y, _, _ = _inputs(4, 5, 9, dtype=torch.float64, seed=13, device=device)
    y[1] = -100
    hg, wg = h.requires_grad_(), w.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: logprobs_entropy(a, b, y, temperature=0.6, backend="torch"), (hg, wg))


def test_validation_errors():
    h, w, y, _, _ = _inputs(4, 8, 10)
    with pytest.raises(ValueError, match="hidden"):
        logprobs_entropy(h[0], w, y)
    with pytest.raises(ValueError, match="weight"):
        logprobs_entropy(h, w[:, :5], y)
    with pytest.raises(TypeError, match="weight has dtype"):
        logprobs_entropy(h, w.double(), y)
    with pytest.raises(TypeError, match="targets"):
        logprobs_entropy(h, w, y.float())
    with pytest.raises(ValueError, match="targets has shape"):
        logprobs_entropy(h, w, y[:3])
    with pytest.raises(ValueError, match="temperature"):
        logprobs_entropy(h, w, y, temperature=0.0)
    with pytest.raises(TypeError, match="temperature"):
        logprobs_entropy(h, w, y, temperature=torch.tensor(0.6))
    with pytest.raises(TypeError, match="hidden must be"):
        logprobs_entropy(h.long(), w.long(), y)
    with pytest.raises(ValueError, match="backend"):
        logprobs_entropy(h, w, y, backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        logprobs_entropy(h.double(), w.double(), y, backend="triton")
    with pytest.raises(ValueError, match="targets has shape"):
        logprobs_entropy_from_logits(torch.randn(2, 3, 10), y)
    with pytest.raises(ValueError, match="logits"):
        logprobs_entropy_from_logits(torch.randn(2, 0), y[:2])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_hidden_path(dtype):
    """On a GPU: the Triton kernels vs the float64 reference, bf16 included, a Qwen-sized vocab."""
    h, w, y, g_lp, g_h = _inputs(1000, 256, 151936, dtype=dtype, seed=14, n_ignored=10,
                                 device="cuda")
    got = _run(logprobs_entropy, h, w, y, g_lp, g_h, temperature=0.6)
    want = _ref(h, w, y, g_lp, g_h, 0.6)
    if dtype == torch.float32:
        _check_fp32(got, want, "gpu fp32")
    else:
        low = _eager_lowprec(h, w, y, g_lp, g_h, 0.6)
        low = tuple(torch.where(y == -100, 0, t) if i < 2 else t for i, t in enumerate(low))
        _check_flash(got, want, low, atol=1e-3, what=f"gpu {dtype}")
    one = _run(logprobs_entropy, h[3:4], w, y[3:4], g_lp[3:4], g_h[3:4], temperature=0.6)
    for a, b in zip(one[:3], got[:3]):
        assert torch.equal(a, b[3:4])
