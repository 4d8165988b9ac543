"""Plain-PyTorch specification of every onerl op.

Each function here is the *definition* the fast kernels are tested against: short, readable,
differentiable with autograd, and exact in float64 (pass float64 tensors to get a float64 answer;
lower precisions are computed in float32). They are also the CPU fallback when the C++ twin is
not built. Nothing here is tuned for speed or memory.
"""
from __future__ import annotations

import torch

STD_MODES = ("unbiased", "population", "none")
SCALE_MODES = ("group", "batch", "none")
KL_TYPES = ("k1", "k2", "k3", None)
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- group_advantages


def _std(x: torch.Tensor, std: str, dim: int) -> torch.Tensor:
    return x.std(dim=dim, correction=1 if std == "unbiased" else 0, keepdim=True)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                     std: str = "unbiased", scale: str = "group") -> torch.Tensor:
    """GRPO outcome advantage of N rewards in contiguous groups of ``group_size``.

    A_i = (r_i - mean_g) / (std + eps), std being the group's (scale="group") or the batch's
    (scale="batch"), unbiased (n-1) or population (n); std="none" or scale="none" divides by
    nothing. A group of one element has mean 0 and std 1 (verl's rule). Returns [N] in float32
    (float64 for float64 input).
    """
    r = rewards.to(_compute_dtype(rewards)).reshape(-1, group_size)
    if group_size == 1 or r.numel() == 0:
        mean, gstd = torch.zeros_like(r), torch.ones_like(r)
    else:
        mean, gstd = r.mean(dim=1, keepdim=True), _std(r, std, 1)
    centered = r - mean
    if std == "none" or scale == "none":
        return centered.reshape(-1)
    if scale == "batch":
        flat = r.reshape(-1)
        gstd = _std(flat, std, 0) if flat.numel() > 1 else flat.new_ones(())
    return (centered / (gstd + eps)).reshape(-1)


# --------------------------------------------------------------------------- grpo_loss


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token KL(pi || ref) estimators: k1 = logp - ref, k2 = (logp - ref)^2 / 2,
    k3 ("low_var_kl") = exp(ref - logp) - (ref - logp) - 1 clamped to [-10, 10]."""
    if kl_type == "k1":
        return logp - ref_logp
    if kl_type == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if kl_type == "k3":
        d = ref_logp - logp
        return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)
    raise ValueError(f"kl_type must be one of {KL_TYPES}, got {kl_type!r}")


def token_weights(mask: torch.Tensor, agg: str) -> torch.Tensor:
    """The weight of each token in the aggregated loss: loss = sum(w * per_token_loss).

    token-mean: 1/#tokens. seq-mean-token-mean: 1/(#tokens of the row * #non-empty rows).
    seq-mean-token-sum: 1/#non-empty rows. seq-mean-token-sum-norm: 1/T (Dr. GRPO's constant
    horizon; rows summed). Empty rows weigh nothing; an all-empty batch gives loss 0.
    """
    m = mask.to(torch.float64 if mask.dtype == torch.float64 else torch.float32)
    per_row = m.sum(dim=1, keepdim=True)
    rows = (per_row > 0).sum().clamp(min=1)
    if agg == "token-mean":
        return m / m.sum().clamp(min=1)
    if agg == "seq-mean-token-mean":
        return m / (per_row.clamp(min=1) * rows)
    if agg == "seq-mean-token-sum":
        return m / rows
    if agg == "seq-mean-token-sum-norm":
        return m / m.shape[1]
    raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, entropy=None, *, clip_low=0.2,
              clip_high=0.2, clip_dual=None, kl_type="k3", kl_coef=0.001, entropy_coef=0.0,
              agg="token-mean"):
    """The clipped GRPO/PPO loss exactly as verl computes it (see docs of onerl_kernels.grpo_loss).

    Per token: ratio = exp(clamp(logp - old, -20, 20));
      pg = max(-A ratio, -A clip(ratio, 1-clip_low, 1+clip_high)), and with a dual clip c for A < 0:
      pg = min(pg, -A c);
      loss_t = pg + kl_coef * KL(logp, ref) - entropy_coef * entropy.
    loss = sum_t w_t loss_t with w from ``token_weights``. Metrics are token-means over the mask.
    Returns (loss, metrics) with metrics = dict(clipfrac, ppo_kl, kl, entropy).
    """
    dt = _compute_dtype(logp)
    logp = logp.to(dt)
    old = logp.detach() if old_logp is None else old_logp.to(dt)
    adv = advantages.to(dt)
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv     # [B] per response or [B, T] per token
    w = token_weights(mask, agg).to(dt)
    m = (mask != 0).to(dt)
    n_tok = m.sum().clamp(min=1)

    log_ratio = torch.clamp(logp - old, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg1, pg2)
    clipped = (pg2 > pg1).to(dt)
    if clip_dual is not None:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * clip_dual), pg)
    per_token = pg
    zero = logp.new_zeros(())
    kl_mean = zero
    if kl_type is not None:
        kl = kl_penalty(logp, ref_logp.to(dt), kl_type)
        per_token = per_token + kl_coef * kl
        kl_mean = (kl * m).sum() / n_tok
    ent_mean = zero
    if entropy is not None:
        ent = entropy.to(dt)
        per_token = per_token - entropy_coef * ent
        ent_mean = (ent * m).sum() / n_tok
    loss = (per_token * w).sum()
    metrics = {
        "clipfrac": ((clipped * m).sum() / n_tok).detach(),
        "ppo_kl": ((-log_ratio * m).sum() / n_tok).detach(),
        "kl": kl_mean.detach(),
        "entropy": ent_mean.detach(),
    }
    return loss, metrics


# --------------------------------------------------------------------------- PPO: GAE, value loss


def gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0):
    """Generalised advantage estimation over the response tokens of each row, a plain loop.

    rewards, values, mask [B, T]. Only the masked tokens t_1 < ... < t_n of a row take part (the
    others are skipped: their rewards and values are ignored, whatever they hold):
        delta_i = r(t_i) + gamma * V(t_{i+1}) - V(t_i)          (V(t_{n+1}) = 0)
        A_i     = delta_i + gamma * lam * A_{i+1}               (A_{n+1} = 0)
        R_i     = A_i + V(t_i)                                  (the value target)
    Returns (advantages, returns) [B, T], 0 at masked-out positions; float64 in, float64 out,
    float32 otherwise. Unwhitened (the trainer whitens).
    """
    dt = _compute_dtype(rewards)
    B, T = rewards.shape
    adv = torch.zeros(B, T, dtype=dt, device=rewards.device)
    ret = torch.zeros_like(adv)
    for b in range(B):
        next_v, next_a = 0.0, 0.0
        for t in reversed(range(T)):
            if not bool(mask[b, t]):
                continue
            r, v = float(rewards[b, t]), float(values[b, t])
            next_a = r + gamma * next_v - v + gamma * lam * next_a
            next_v = v
            adv[b, t], ret[b, t] = next_a, next_a + v
    return adv, ret


def value_loss(vpred, old_values, returns, mask, cliprange=0.5, agg="token-mean"):
    """PPO's clipped value loss (verl's compute_value_loss):
        v_clip = clamp(vpred, old - cliprange, old + cliprange)
        loss   = 0.5 * agg(max((vpred - R)^2, (v_clip - R)^2))
    with agg over the mask (``token_weights``). Returns (loss, clipfrac) where clipfrac is the
    token-mean of [(v_clip - R)^2 > (vpred - R)^2]."""
    dt = _compute_dtype(vpred)
    m = mask != 0
    z = torch.zeros((), dtype=dt, device=vpred.device)
    v, old, ret = (torch.where(m, x.to(dt), z) for x in (vpred, old_values, returns))
    v_clip = torch.minimum(torch.maximum(v, old - cliprange), old + cliprange)
    l1, l2 = (v - ret) ** 2, (v_clip - ret) ** 2
    loss = 0.5 * (torch.maximum(l1, l2) * token_weights(m.to(dt), agg)).sum()
    clipfrac = ((l2 > l1) & m).sum().to(dt) / m.sum().clamp(min=1)
    return loss, clipfrac


# ================================================================ paged KV, attention, sample
# Rollout-engine ops. Cache layout [num_blocks, block_size, kv_heads, head_dim]; a token's slot is
# block_id * block_size + offset; block_tables[b, j] is the j-th block of sequence b.


def write_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    """In place: cache slot slot_mapping[i] <- k[i], v[i] ([N, Hkv, D]); slot -1 = skip."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[keep].to(v_cache.dtype)


def _gather_seq(cache, table, n):
    """The first n tokens of one sequence from the cache: [n, Hkv, D]."""
    bs = cache.shape[1]
    pos = torch.arange(n, device=cache.device)
    return cache[table.long()[pos // bs], pos % bs]


def _attend(q, k, v, scale, causal_from=None):
    """q [M, Hq, D] against k, v [L, Hkv, D] (GQA: query head h uses kv head h // (Hq/Hkv)).
    causal_from: query i sees keys [0, causal_from + i]; None = all keys."""
    dt = _compute_dtype(q)
    g = q.shape[1] // k.shape[1]
    k = k.to(dt).repeat_interleave(g, dim=1)
    v = v.to(dt).repeat_interleave(g, dim=1)
    s = torch.einsum("mhd,lhd->hml", q.to(dt), k) * scale
    if causal_from is not None:
        qi = torch.arange(q.shape[0], device=q.device)[:, None]
        s = s.masked_fill(torch.arange(k.shape[0], device=q.device)[None] > causal_from + qi,
                          float("-inf"))
    p = torch.softmax(s, dim=-1) if k.shape[0] else s
    return torch.einsum("hml,lhd->mhd", p, v).to(q.dtype)


def paged_attention(q, k_cache, v_cache, block_tables, seq_lens, scale):
    """Decode attention: q [B, Hq, D] (one token per sequence) over positions [0, seq_lens[b])
    of sequence b, read through block_tables [B, max_blocks]. Returns [B, Hq, D] in q's dtype;
    a sequence of length 0 gives zeros."""
    out = q.new_zeros(q.shape)
    for b in range(q.shape[0]):
        n = int(seq_lens[b])
        if n:
            k = _gather_seq(k_cache, block_tables[b], n)
            v = _gather_seq(v_cache, block_tables[b], n)
            out[b] = _attend(q[b:b + 1], k, v, scale)[0]
    return out


def paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale):
    """Chunked prefill: the queries q[cu_seqlens_q[b]:cu_seqlens_q[b+1]] of sequence b are its
    LAST tokens (total length seq_lens[b], K/V of all of them already in the cache); query i of
    a chunk of m sees positions [0, seq_lens[b] - m + i]. Returns [Nq, Hq, D]."""
    out = q.new_zeros(q.shape)
    for b in range(block_tables.shape[0]):
        lo, hi, n = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(seq_lens[b])
        if hi > lo:
            k = _gather_seq(k_cache, block_tables[b], n)
            v = _gather_seq(v_cache, block_tables[b], n)
            out[lo:hi] = _attend(q[lo:hi], k, v, scale, causal_from=n - (hi - lo))
    return out


# Sampling. Noise: Philox4x32-10 keyed by the row's seed, counter (position lo, hi, stream, tag).
# The vocabulary is cut into chunks of SAMPLE_CHUNK tokens; each chunk draws one token by inverse
# CDF (one uniform, stream = chunk index) in a fixed lane order, and one more uniform (stream
# 0xFFFFFFFF) picks the chunk in proportion to its mass: an exact draw from the truncated softmax.
SAMPLE_CHUNK, SAMPLE_LANES, SAMPLE_TAG, _M32 = 4096, 256, 0x6F6E6572, 0xFFFFFFFF
_PHILOX_M, _PHILOX_W = (0xD2511F53, 0xCD9E8D57), (0x9E3779B9, 0xBB67AE85)


def _mulhilo(a: int, x):
    """(hi, lo) 32-bit words of the 64-bit product a * x, x an int64 tensor of uint32 values."""
    p_lo, p_hi = a * (x & 0xFFFF), a * (x >> 16)  # both < 2**48
    return (p_hi + (p_lo >> 16)) >> 16, ((p_hi << 16) + p_lo) & _M32


def philox4x32(key0, key1, c0, c1, c2, c3, rounds: int = 10):
    """Philox4x32-10 (Salmon et al. 2011) on int64 tensors holding uint32 values."""
    for r in range(rounds):
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ key0, lo1, hi0 ^ c3 ^ key1, lo0
        if r < rounds - 1:
            key0, key1 = (key0 + _PHILOX_W[0]) & _M32, (key1 + _PHILOX_W[1]) & _M32
    return c0, c1, c2, c3


def sample_uniform(seeds, positions, stream):
    """u in [0, 1) (24 bits) for each row: Philox(seed; position, stream, tag), first word."""
    s, p = seeds.long(), positions.long()
    st = torch.as_tensor(stream, dtype=torch.long, device=s.device) & _M32
    x = philox4x32(s & _M32, (s >> 32) & _M32, p & _M32, (p >> 32) & _M32, st + 0 * s,
                   torch.full_like(s, SAMPLE_TAG))[0]
    return (x >> 8).double() * 2.0 ** -24


def sample_keep_mask(z, temperature, top_k, top_p):
    """Which tokens survive top-k then top-p (tie-inclusive): token v is kept by top-k iff fewer
    than k tokens have a larger logit, and by top-p iff the top-k-renormalised softmax(z/T) mass
    of the kept tokens with a larger logit is < p (the largest logit is always kept). k <= 0 or
    p >= 1 disables; T == 0 keeps all."""
    z = z.double()
    keep = torch.ones_like(z, dtype=torch.bool)
    k = top_k.long()[:, None]
    kth = z.sort(dim=1, descending=True).values.gather(1, (k.clamp(1, z.shape[1]) - 1))
    keep &= (k <= 0) | (k >= z.shape[1]) | (z >= kth)
    inv_t = torch.where(temperature > 0, 1.0 / temperature.double(), 1.0)[:, None]
    p = torch.softmax(torch.where(keep, z * inv_t, float("-inf")), dim=1)
    zs, order = z.sort(dim=1, descending=True)
    ps = p.gather(1, order)
    excl = ps.cumsum(1) - ps  # mass before each token in sorted order; ties share the first's
    first = torch.searchsorted(-zs.contiguous(), -zs.contiguous(), right=False)
    greater = torch.empty_like(p).scatter_(1, order, excl.gather(1, first))
    keep &= (top_p[:, None] >= 1) | (greater < top_p.double()[:, None]) | (greater == 0)
    return keep | (temperature[:, None] == 0)


def sample(logits, temperature, top_k, top_p, seeds, positions):
    """Sample one token per row of logits [B, V]; returns (tokens int64 [B], logp fp32 [B]) with
    logp = log_softmax(logits / T)[token] over the FULL vocabulary (T == 0: argmax, logp at T=1)."""
    B, V = logits.shape
    z = logits.double()
    inv_t = torch.where(temperature > 0, 1.0 / temperature.double(), 1.0)[:, None]
    nc, C = -(-V // SAMPLE_CHUNK), SAMPLE_CHUNK
    # lane order inside a chunk: chunk position s*1024 + t*4 + e comes at t*16 + s*4 + e
    v = torch.arange(V, device=z.device)
    o = v % C
    perm = torch.argsort((v // C) * C + ((o % 1024) // 4) * 16 + (o // 1024) * 4 + o % 4)
    chunk = perm // C  # non-decreasing: chunks are contiguous runs in lane order
    zp = z[:, perm]
    keep = sample_keep_mask(z, temperature, top_k, top_p)[:, perm]
    idx = chunk.expand(B, -1)
    per_chunk = lambda x, red, init: torch.full((B, nc), init, dtype=x.dtype, device=z.device) \
        .scatter_reduce(1, idx, x, red, include_self=True)  # noqa: E731
    m_c = per_chunk(torch.where(keep, zp, float("-inf")), "amax", float("-inf"))
    w = torch.where(keep, torch.exp((zp - m_c.clamp(min=-1e300).gather(1, idx)) * inv_t), 0.0)
    s_c = per_chunk(w, "sum", 0.0)
    u_c = torch.stack([sample_uniform(seeds, positions, c) for c in range(nc)], 1)
    cs = w.cumsum(1)
    cs = cs - torch.nn.functional.pad(cs, (1, 0))[:, torch.arange(nc, device=z.device) * C] \
        .gather(1, idx)  # cumulative mass within each chunk
    pos = torch.arange(V, device=z.device).expand(B, -1)
    hit = (cs > (u_c * s_c).gather(1, idx)) & (w > 0)
    first = per_chunk(torch.where(hit, pos, V), "amin", V)
    last = per_chunk(torch.where(w > 0, pos, -1), "amax", -1)
    pick_c = torch.where(first < V, first, last.clamp(min=0))  # lane-order index per chunk
    m_a = m_c.amax(1, keepdim=True).clamp(min=-1e300)
    w_chunk = torch.where(s_c > 0, s_c * torch.exp((m_c - m_a) * inv_t), 0.0)
    u = sample_uniform(seeds, positions, _M32)[:, None]
    c = _first_above(w_chunk.cumsum(-1), u * w_chunk.sum(-1, keepdim=True), w_chunk > 0)
    token = perm[pick_c.gather(1, c[:, None])[:, 0]]
    token = torch.where(temperature == 0, z.argmax(1), token)
    logp = torch.log_softmax(z * inv_t, dim=1).gather(1, token[:, None])[:, 0]
    return token, logp.float()


def _first_above(cs, target, positive):
    """Index of the first cs > target along the last dim (the last positive entry if none)."""
    n = cs.shape[-1]
    idx = torch.arange(n, device=cs.device)
    first = torch.where((cs > target) & positive, idx, n).amin(-1)
    last = torch.where(positive, idx, -1).amax(-1).clamp(min=0)
    return torch.where(first < n, first, last)


# ---- logprobs_entropy


def logprobs_entropy_from_logits(logits, targets, temperature=1.0, ignore_index=-100):
    """Per-position log p(target) and entropy of softmax(logits / temperature) over the last dim.

    logits [..., V], targets [...] (int). Returns (logp, entropy) shaped like targets; a target
    equal to ``ignore_index`` gives 0 for both (and no gradient). Entropy is the definition,
    -sum p log p. float64 in, float64 out; float32 otherwise. Materialises [..., V].
    """
    s = logits.to(_compute_dtype(logits)) / temperature
    logp_all = torch.log_softmax(s, dim=-1)
    ignored = targets == ignore_index
    safe = torch.where(ignored, 0, targets)
    logp = logp_all.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return torch.where(ignored, 0.0, logp), torch.where(ignored, 0.0, entropy)


def logprobs_entropy(hidden, weight, targets, temperature=1.0, ignore_index=-100):
    """``logprobs_entropy_from_logits(hidden @ weight.T, ...)``: hidden [M, H], weight [V, H]."""
    dt = _compute_dtype(hidden)
    return logprobs_entropy_from_logits(hidden.to(dt) @ weight.to(dt).T, targets, temperature,
                                        ignore_index)
