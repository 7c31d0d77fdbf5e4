"""CTAugment on the training device: the rates as one flat tensor, per-sample policy draws, batched
ops (:mod:`.ctaugment_ops`) and the rate update as one pure tensor function.

The flat layout is the reference's (:func:`.ctaugment.rate_offsets`: ops in the
official registration order, each parameter's bins in turn, 303 rates), so a state dict moves
between :class:`.ctaugment.CTAugment` and :class:`BatchedCTAugment` unchanged.
Everything here keeps static shapes and never reads a value back to the host (no ``.item()``,
``.tolist()``), except the CPU path of :func:`ctaugment_ops.apply_round`, which sorts by op.

Same distributions as the reference, not the same random stream: the batched draws come from a
``torch.Generator`` in the order ops (N, depth), U[0,1) per parameter (N, depth, 2), the bin
uniforms (N, depth, 2, not for a probe), then per round the cutout centres x, y (N each, drawn for
every sample: static shapes), then the strong view's cutout centres.
"""
from __future__ import annotations

import functools

import torch

from .ctaugment import DECAY, DEPTH, N_RATES, OP_NAMES, OPS, THRESHOLD, rate_offsets
from .base import Policy, Rows
from .ctaugment_ops import apply_round, cutout_batch, cutout_size

MAX_PARAMS = max(len(b) for b in OPS.values())  # 2 (rescale)
MAX_BINS = max(max(b, default=0) for b in OPS.values())  # 17


@functools.lru_cache(maxsize=None)
def rate_index(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(19, 2, 17) flat index of every bin (−1: none), (19, 2) bins per parameter (0: no such
    parameter), (19, 2) offset of each parameter's first bin (0 where none)."""
    index = torch.full((len(OP_NAMES), MAX_PARAMS, MAX_BINS), -1, dtype=torch.long)
    nbins = torch.zeros((len(OP_NAMES), MAX_PARAMS), dtype=torch.long)
    offsets = torch.zeros_like(nbins)
    for i, (name, starts) in enumerate(rate_offsets().items()):
        for j, (start, nb) in enumerate(zip(starts, OPS[name])):
            index[i, j, :nb] = torch.arange(start, start + nb)
            nbins[i, j], offsets[i, j] = nb, start
    return index.to(device), nbins.to(device), offsets.to(device)


def probabilities(rates: torch.Tensor, threshold: float = THRESHOLD, decay: float = DECAY) -> torch.Tensor:
    """(19, 2, 17) unnormalised draw weights: the reference's ``rate_to_p`` per parameter,
    p = (rate + (1 − decay)) / max, p < threshold zeroed; 0 beyond a parameter's bins. A missing
    parameter gets weight 1 on bin 0 so every row is drawable (its value is discarded)."""
    index, nbins, _ = rate_index(rates.device)
    valid = index >= 0
    p = torch.where(valid, rates.index_select(0, index.clamp(min=0).view(-1)).view(index.shape) + (1 - decay), 0.0)
    p = p / p.amax(-1, keepdim=True).clamp(min=torch.finfo(p.dtype).tiny)
    p = torch.where(p < threshold, 0.0, p)
    dummy = torch.zeros_like(p)
    dummy[..., 0] = 1.0
    return torch.where((nbins == 0).unsqueeze(-1), dummy, p)


def bins_from_uniform(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Bin drawn ∝ ``p`` (last dim) for uniforms ``u``: numpy's ``Generator.choice(n, p=p/p.sum())``
    (cdf = cumsum, divided by its last entry, searchsorted(u, 'right')): zero-weight bins have
    empty intervals and are never drawn."""
    cdf = torch.cumsum(p / p.sum(-1, keepdim=True), -1)
    cdf = cdf / cdf[..., -1:]
    return (cdf <= u.unsqueeze(-1)).sum(-1).clamp(max=p.shape[-1] - 1)


def draw_policy(rates: torch.Tensor, n: int, gen: torch.Generator, probe: bool, depth: int = DEPTH,
                threshold: float = THRESHOLD, decay: float = DECAY) -> tuple[torch.Tensor, torch.Tensor]:
    """``depth`` ops per sample, uniform over the 19, and their parameter values in [0, 1).

    Training (``probe=False``): value = (bin + U[0,1)) / nbins with the bin drawn from the rates
    (:func:`probabilities`). Probe: value = U[0,1), the rates unread. Returns ops (n, depth) int64
    and values (n, depth, 2) float64 (0 where an op has fewer parameters)."""
    dev = rates.device
    _, nbins, _ = rate_index(dev)
    ops = torch.randint(0, len(OP_NAMES), (n, depth), generator=gen, device=dev)
    r = torch.rand((n, depth, MAX_PARAMS), generator=gen, device=dev, dtype=torch.float64)
    nb = nbins.index_select(0, ops.view(-1)).view(n, depth, MAX_PARAMS)
    if probe:
        return ops, torch.where(nb > 0, r, 0.0)
    u = torch.rand((n, depth, MAX_PARAMS), generator=gen, device=dev, dtype=torch.float64)
    p = probabilities(rates, threshold, decay).index_select(0, ops.view(-1)).view(n, depth, MAX_PARAMS, MAX_BINS)
    values = (bins_from_uniform(p, u) + r) / nb.clamp(min=1)
    return ops, torch.where(nb > 0, values, 0.0)


def update_rates(rates: torch.Tensor, ops: torch.Tensor, values: torch.Tensor, proximity: torch.Tensor,
                 decay: float = DECAY) -> torch.Tensor:
    """The rates after the reference's :meth:`CTAugment.update` of every sample's probe in order
    (samples, then their ops, then parameters), as one closed form; a new tensor.

    Each update of bin j is r ← d·r + (1 − d)·q. By induction, after the K_j updates q_1..q_K of
    bin j in order, r_K = d^K·r_0 + (1 − d)·Σ_k d^(K−k)·q_k; the exponent K − k of an update is
    the number of later updates of the same bin. Those counts come from an exact integer cumsum
    over a (bins, updates) one-hot and the sums from a dense row reduction: deterministic (no
    atomics), so every DDP rank given the same (gathered) probes computes bit-identical rates.
    Equal to the sequential float64 loop up to rounding (relative ~1e-16 per update; tested).
    """
    dev = rates.device
    _, nbins, offsets = rate_index(dev)
    n, depth = ops.shape
    flat_ops = ops.reshape(-1)
    nb = nbins.index_select(0, flat_ops).view(n, depth, MAX_PARAMS)
    b = torch.minimum(torch.floor(values * nb * 0.999).long(), nb - 1).clamp(min=0)  # int(v·nbins·0.999)
    start = offsets.index_select(0, flat_ops).view(n, depth, MAX_PARAMS)
    target = torch.where(nb > 0, start + b, N_RATES).view(-1)  # N_RATES: a bin that absorbs non-parameters
    q = proximity.to(dev, torch.float64).view(n, 1, 1).expand(n, depth, MAX_PARAMS).reshape(-1)
    onehot = target.view(1, -1) == torch.arange(N_RATES + 1, device=dev).view(-1, 1)  # (bins + 1, U)
    seen = torch.cumsum(onehot.long(), 1)  # updates of each bin so far, inclusive
    count = seen[:, -1] if seen.shape[1] else torch.zeros(N_RATES + 1, dtype=torch.long, device=dev)
    later = count.index_select(0, target) - seen.gather(0, target.view(1, -1)).view(-1)
    weight = (1 - decay) * torch.pow(decay, later.double()) * q  # scalar base: no host-to-device copy
    gain = torch.where(onehot, weight.view(1, -1), 0.0).sum(1)
    kept = torch.pow(decay, count.double())
    return (kept * torch.cat([rates.to(torch.float64), rates.new_zeros(1, dtype=torch.float64)]) + gain)[:N_RATES]


def proximity_batch(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) float64: 1 − Σ|p − onehot(y)| / 2 per row of ``probs`` (N, K)."""
    p = probs.to(torch.float64)
    onehot = torch.zeros_like(p).scatter_(1, labels.view(-1, 1).long(), 1.0)
    return 1 - 0.5 * (p - onehot).abs().sum(1)


def apply_policy_batch(x: torch.Tensor, ops: torch.Tensor, values: torch.Tensor, gen: torch.Generator | None = None,
                       centres: tuple[torch.Tensor, torch.Tensor] | None = None,
                       dense: bool | None = None, rows: Rows | None = None) -> torch.Tensor:
    """Apply each sample's policy (ops (N, depth), values (N, depth, 2)) to the uint8 batch ``x``,
    round by round. A cutout op's centre comes from ``centres`` ((N, depth) x and y, integers) or
    is drawn from ``gen`` (x uniform in 0..W−1, then y in 0..H−1, for every sample and round; with
    ``rows``, drawn for the whole batch and ``x``, ``ops``, ``values`` are those rows)."""
    n, depth = ops.shape
    h, w = x.shape[-2:]
    if centres is None:
        total = rows.total if rows is not None else n
        cx = torch.randint(0, w, (total, depth), generator=gen, device=x.device)
        cy = torch.randint(0, h, (total, depth), generator=gen, device=x.device)
        if rows is not None:
            cx, cy = rows.of(cx), rows.of(cy)
    else:
        cx, cy = centres
    for r in range(depth):
        x = apply_round(x, ops[:, r], values[:, r, 0], values[:, r, 1], cx[:, r], cy[:, r], dense=dense)
    return x


def cutout_level(x: torch.Tensor, level: float, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
    """Official cutout at ``level`` (1 for the strong view: 16 px at 32×32, 48 px at 96×96) on every
    sample, centres drawn from ``gen`` (x, then y; for the whole batch when ``x`` is ``rows`` of it)."""
    n, _, h, w = x.shape
    rows = rows or Rows.all(n)
    cx = rows.of(torch.randint(0, w, (rows.total,), generator=gen, device=x.device))
    cy = rows.of(torch.randint(0, h, (rows.total,), generator=gen, device=x.device))
    size = cutout_size(torch.full((n,), float(level), dtype=torch.float64, device=x.device), h, w)
    return cutout_batch(x, size, cx, cy)


class BatchedCTAugment:
    """CTAugment state on a device: flat float64 rates (state-dict compatible with the reference),
    strong views, probes and updates of whole uint8 batches."""

    def __init__(self, device: torch.device | str = "cpu", depth: int = DEPTH, threshold: float = THRESHOLD,
                 decay: float = DECAY):
        self.depth, self.threshold, self.decay = depth, threshold, decay
        self.rates = torch.ones(N_RATES, dtype=torch.float64, device=device)

    def policy(self, n: int, gen: torch.Generator, probe: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return draw_policy(self.rates, n, gen, probe, self.depth, self.threshold, self.decay)

    def strong(self, x_weak: torch.Tensor, gen: torch.Generator, with_ops: bool = True,
               with_cutout: bool = True, rows: Rows | None = None) -> torch.Tensor:
        """Strong view of weakly augmented uint8 images: ``depth`` ops from the rates, cutout level 1
        (either part left out, drawing nothing, by ``with_ops`` / ``with_cutout``). ``x_weak`` may
        be ``rows`` of a bigger batch: draws for all of it, see :class:`.base.Rows`."""
        rows = rows or Rows.all(len(x_weak))
        x = x_weak
        if with_ops:
            ops, values = self.policy(rows.total, gen, probe=False)
            x = apply_policy_batch(x_weak, rows.of(ops), rows.of(values), gen, rows=rows)
        return cutout_level(x, 1.0, gen, rows) if with_cutout else x

    def probe(self, x_weak: torch.Tensor, gen: torch.Generator,
              rows: Rows | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Probe images (uniform ops and parameters, no cutout) of ``x_weak`` (``rows`` of the batch)
        and the whole batch's (ops, values) for :meth:`update`."""
        rows = rows or Rows.all(len(x_weak))
        ops, values = self.policy(rows.total, gen, probe=True)
        return apply_policy_batch(x_weak, rows.of(ops), rows.of(values), gen, rows=rows), ops, values

    def update(self, ops: torch.Tensor, values: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Move the rates by the probes' proximity (``probs``: the EMA model's softmax on the probes),
        in place: a captured augmentation graph reads them where it found them."""
        self.rates.copy_(update_rates(self.rates, ops, values, proximity_batch(probs, labels), self.decay))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rates": self.rates.detach().to("cpu", copy=True)}

    def load_state_dict(self, state: dict) -> None:
        rates = torch.as_tensor(state["rates"]).reshape(-1)
        if rates.numel() != N_RATES:
            raise ValueError(f"CTAugment rates have {rates.numel()} entries, expected {N_RATES}")
        self.rates.copy_(rates.to(self.rates.device, torch.float64))  # in place, as update


class CTAugmentPolicy(Policy):
    """CTAugment as the paper's CTA variant (``policy: ctaugment``): it learns during training.

    The batched path holds the rates on the training device; after each step the run loop
    probes the step's weak labeled views (:meth:`probe_batch`, global batch, identical draws on
    every rank), classifies them with the EMA model, gathers the probabilities of all ranks and
    calls :meth:`learn`, so every rank applies the same update and the rates stay identical. The
    rates are in every checkpoint (exact resume). ``strong_image`` is the per-image reference
    (the same rates), for tests and in-process loading only: data-loader processes never see the
    updates, so the policy declares the ``tensor`` backend alone.
    """

    name = "ctaugment"
    backends = frozenset({"tensor"})
    learns = True

    def __init__(self, device: torch.device | str = "cpu", with_ops: bool = True, with_cutout: bool = True):
        super().__init__(with_ops, with_cutout)
        self.batched = BatchedCTAugment(device)

    def strong_image(self, img, rng):
        from .ctaugment import CTAugment, apply, cutout

        if self.with_ops:
            ref = CTAugment(self.batched.depth, self.batched.threshold, self.batched.decay)
            ref.load_state_dict(self.batched.state_dict())
            img = apply(img, ref.policy(rng, probe=False), rng)
        return cutout(img, 1.0, rng) if self.with_cutout else img

    def strong_batch(self, x: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
        return self.batched.strong(x, gen, self.with_ops, self.with_cutout, rows)

    def probe_batch(self, x: torch.Tensor, gen: torch.Generator,
                    rows: Rows | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        images, ops, values = self.batched.probe(x, gen, rows)
        return images, (ops, values)

    def learn(self, probe: tuple[torch.Tensor, torch.Tensor], probs: torch.Tensor, labels: torch.Tensor) -> None:
        ops, values = probe
        self.batched.update(ops, values, probs.to(torch.float64), labels)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.batched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.batched.load_state_dict(state)
