"""write_kv / copy_blocks: every backend against the torch reference on fresh random inputs."""
import pytest
import torch

from conftest import poison
from onerl_kernels import _backend, copy_blocks, reference, write_kv
from onerl_kernels.paged_kv import BACKENDS


def _backends(device):
    return [b for b in BACKENDS if _backend.available(b, device)]


def _caches(nb, bs, H, D, dtype, device):
    shape = (nb, bs, H, D)
    return poison(torch.empty(shape, dtype=dtype, device=device)), \
        poison(torch.empty(shape, dtype=dtype, device=device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bs", [1, 16])
def test_write_kv_matches_reference(device, dtype, bs):
    g = torch.Generator().manual_seed(bs)
    H, D, N = 2, 24, 40
    nb = max(12, 2 * N // bs)
    # K and V as views into a fused QKV projection (token stride != H * D)
    qkv = torch.randn(N, 3 * H * D + 8, generator=g).to(device=device, dtype=dtype)
    k = qkv[:, H * D:2 * H * D].view(N, H, D)
    v = qkv[:, 2 * H * D:3 * H * D].view(N, H, D)
    slots = torch.randperm(nb * bs, generator=g)[:N]
    slots[torch.rand(N, generator=g) < 0.25] = -1
    slots = slots.to(device)
    for backend in _backends(device):
        kc, vc = _caches(nb, bs, H, D, dtype, device)
        kr, vr = kc.clone(), vc.clone()
        write_kv(k, v, kc, vc, slots, backend=backend)
        reference.write_kv(k, v, kr, vr, slots)
        assert torch.equal(kc.isnan(), kr.isnan()), backend  # skipped slots stay untouched
        torch.testing.assert_close(kc.nan_to_num(), kr.nan_to_num(), rtol=0, atol=0, msg=backend)
        torch.testing.assert_close(vc.nan_to_num(), vr.nan_to_num(), rtol=0, atol=0, msg=backend)


def test_copy_blocks_matches_reference(device):
    g = torch.Generator().manual_seed(1)
    nb, bs, H, D = 10, 4, 2, 8
    base_k, base_v = torch.randn(2, nb, bs, H, D, generator=g).to(device).unbind(0)
    src = torch.tensor([1, 3, 3], device=device)
    dst = torch.tensor([7, 0, 9], device=device)
    for backend in _backends(device):
        kc, vc = base_k.clone(), base_v.clone()
        copy_blocks(kc, vc, src, dst, backend=backend)
        kr, vr = base_k.clone(), base_v.clone()
        kr[dst], vr[dst] = base_k[src], base_v[src]
        assert torch.equal(kc, kr) and torch.equal(vc, vr), backend


def test_write_kv_empty_and_all_skipped(device):
    kc, vc = _caches(4, 2, 1, 8, torch.float32, device)
    for backend in _backends(device):
        write_kv(torch.zeros(0, 1, 8, device=device), torch.zeros(0, 1, 8, device=device), kc, vc,
                 torch.zeros(0, dtype=torch.long, device=device), backend=backend)
        write_kv(torch.ones(3, 1, 8, device=device), torch.ones(3, 1, 8, device=device), kc, vc,
                 torch.full((3,), -1, dtype=torch.long, device=device), backend=backend)
        assert kc.isnan().all() and vc.isnan().all()


def test_write_kv_errors():
    kc, vc = torch.zeros(4, 2, 2, 8), torch.zeros(4, 2, 2, 8)
    k = torch.zeros(3, 2, 8)
    slots = torch.arange(3)
    with pytest.raises(TypeError, match="k is torch.float16"):
        write_kv(k.half(), k, kc, vc, slots)
    with pytest.raises(ValueError, match="v must be"):
        write_kv(k, torch.zeros(3, 1, 8), kc, vc, slots)
    with pytest.raises(ValueError, match="slot_mapping must be int64"):
        write_kv(k, k, kc, vc, slots.int())
    with pytest.raises(ValueError, match="v_cache"):
        write_kv(k, k, kc, torch.zeros(4, 2, 2, 4), slots)
    if _backend.has_cpp():
        with pytest.raises(ValueError, match="outside the cache"):
            write_kv(k, k, kc, vc, torch.tensor([0, 8, 1]), backend="cpp")
    with pytest.raises(ValueError, match="src must be an int64"):
        copy_blocks(kc, vc, torch.tensor([0.0]), torch.tensor([1]))


def test_opcheck_and_compile():
    kc, vc = torch.randn(6, 4, 2, 8), torch.randn(6, 4, 2, 8)
    k, v = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    slots = torch.tensor([0, 5, -1, 23, 9])
    for backend in ("torch",) + (("cpp",) if _backend.has_cpp() else ()):
        torch.library.opcheck(torch.ops.onerl.write_kv.default,
                              (k, v, kc.clone(), vc.clone(), slots, backend))
        torch.library.opcheck(torch.ops.onerl.copy_blocks.default,
                              (kc.clone(), vc.clone(), torch.tensor([1]), torch.tensor([4]),
                               backend))

    @torch.compile(fullgraph=True)
    def step(k, v, kc, vc, slots):
        write_kv(k * 2, v, kc, vc, slots)
        return kc.sum()

    kr, vr = kc.clone(), vc.clone()
    reference.write_kv(k * 2, v, kr, vr, slots)
    torch.testing.assert_close(step(k, v, kc, vc, slots), kr.sum())
    assert torch.equal(kc, kr) and torch.equal(vc, vr)
