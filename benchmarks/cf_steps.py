"""Time of one training step of LightGCN and SimpleX at 40k items, before and after the
CSR training paths, in one process (so the machine's load hits both alike).

Data: the training part of ``benchmarks.recall_scale`` (30k users x 40k items, 640k rows;
the LightGCN graph has 1.28M nonzeros), d = 64, 2 torch threads, Adam (fused).

* LightGCN, 3 layers, BPR with one uniform negative: "before" propagates with a COO
  adjacency through ``torch.sparse.mm``'s autograd; "after" with the CSR adjacency and
  ``torch_base.sparse_mm`` (the same CSR kernel backward, Â being symmetric).
* SimpleX, 300 shared negatives, CCL: "before" pools the (B, 100) history by gathering
  (B, L, D) embeddings and a masked mean (the old ``SequencePooling`` path); "after" by the
  per-batch CSR row-mean matrix (``history_mean_rows`` + ``sparse_mm``).

Seconds per step are means over a few steps after one warm-up step; s/epoch multiplies by
the steps of one epoch at that batch size.

``--models softmax`` instead times the sampled-softmax loss of SimpleX's sparse settings
alone (B 4096 normalised queries and positives, 2,048 shared negatives, D 256, T 0.2,
accidental hits masked; forward and backward, no data), "before" as a cross-entropy over the
concatenated (B, 1 + N) logits with the temperature dividing the (B, N) scores (the loss
as it was), "after" ``recforge.losses.sampled_softmax``; user and system CPU milliseconds
and minor page faults per step (``getrusage``), 1 torch thread, alternating repeats.

``--models gate0`` times a whole SimpleX step of the sparse settings (gate 0, softmax at
T 0.2 over 2,048 negatives, batch 4096, fused Adam; random histories of 20 items over 30k
users x 40k items, no data) at widths 64 and 512: "before" with the user vector as the
gated formula ``0 * user(u) + 1 * aggregate(pooled)`` (as it was: the user table is read,
gets a zero-filled (U, D) gradient and an Adam step that does not move it), "after" the
module's own ``combine`` (gate 0 leaves the user table out); same counters, alternating
repeats.

    nice -n 10 python -m benchmarks.cf_steps
    python -m benchmarks.cf_steps --models softmax
    python -m benchmarks.cf_steps --models gate0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.nn import functional as F


def _per_step(run, k: int) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``run()`` over ``k`` calls, after one warm-up call."""
    run()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(k):
        run()
    return (time.perf_counter() - t) / k, (time.process_time() - c) / k


def _data():
    from benchmarks.recall_scale import write_split

    tmp = Path(tempfile.mkdtemp(prefix="cf_steps_"))
    write_split(tmp, "test")
    frame = pd.read_parquet(tmp / "train.parquet")
    return frame


def lightgcn_steps(frame: pd.DataFrame, batches=(2048, 8192), n_steps: int = 2) -> list[dict]:
    from recforge.models.retrieval.lightgcn import normalized_adjacency
    from recforge.models.retrieval.torch_base import sparse_mm, torch_csr

    u = pd.factorize(frame["user"])[0]
    i = pd.factorize(frame["item"])[0]
    nu, ni = int(u.max()) + 1, int(i.max()) + 1
    a = normalized_adjacency(sp.csr_matrix((np.ones(len(u), np.float32), (u, i))))
    coo = a.tocoo()
    a_coo = torch.sparse_coo_tensor(
        np.vstack([coo.row, coo.col]).astype(np.int64), coo.data, a.shape
    ).coalesce()
    a_csr = torch_csr(a)
    rng = np.random.default_rng(0)
    ways = {
        "before (COO, autograd)": lambda x: torch.sparse.mm(a_coo, x),
        "after (CSR, sparse_mm)": lambda x: sparse_mm(a_csr, a_csr, x),
    }

    def step(mm, emb, opt, b):
        users = torch.from_numpy(rng.integers(0, nu, b))
        pos = torch.from_numpy(rng.integers(0, ni, b))
        neg = torch.from_numpy(rng.integers(0, ni, b))
        e = emb.weight
        total = e
        for _ in range(3):
            e = mm(e)
            total = total + e
        f = total / 4
        uu = f[users]
        loss = F.softplus((uu * f[nu + neg]).sum(-1) - (uu * f[nu + pos]).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = []
    for name, mm in ways.items():
        for b in batches:
            torch.manual_seed(0)
            emb = torch.nn.Embedding(nu + ni, 64)
            opt = torch.optim.Adam(emb.parameters(), lr=1e-3, fused=True)
            dt, cpu = _per_step(partial(step, mm, emb, opt, b), n_steps)
            rows.append(
                {
                    "model": "lightgcn",
                    "path": name,
                    "batch": b,
                    "s_per_step": dt,
                    "cpu_s_per_step": cpu,
                    "s_per_epoch": dt * -(-len(u) // b),
                    "nnz": int(a.nnz),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def simplex_steps(frame: pd.DataFrame, batches=(512, 4096), n_steps: int = 2) -> list[dict]:
    from recforge.data.batching import drop_targets, history_matrix
    from recforge.data.interactions import Interactions
    from recforge.data.vocab import IdVocab
    from recforge.models.retrieval.simplex import SimpleXModule, ccl_loss, history_mean_rows

    inter = Interactions(frame)
    uv = IdVocab(pd.unique(frame["user"]), "user")
    iv = IdVocab(pd.unique(frame["item"]))
    hist = history_matrix(inter, uv, iv, 100)
    nu, ni, n = len(uv), len(iv), len(frame)
    u_all = uv.index(frame["user"].to_numpy())
    i_all = iv.index(frame["item"].to_numpy())
    rng = np.random.default_rng(0)

    def before(m, users, h):  # gather (B, L, D) + masked mean
        mask = (h > 0).float().unsqueeze(-1)
        pooled = (m.item(h) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return m.combine(users, pooled)

    def after(m, users, h):
        return m.user_vectors_sparse(users, history_mean_rows(h.numpy(), ni + 1))

    def step(m, opt, b, user_vectors):
        rows = rng.integers(0, n, b)
        users, pos = u_all[rows], i_all[rows]
        h = torch.from_numpy(drop_targets(hist[users], pos))
        users, pos = torch.from_numpy(users), torch.from_numpy(pos)
        neg = torch.from_numpy(rng.integers(0, ni, 300))
        u = user_vectors(m, users, h)
        loss = ccl_loss(
            (u * m.item_vectors(pos)).sum(-1),
            u @ m.item_vectors(neg).T,
            margin=0.3,
            negative_weight=5.0,
            accidental=neg[None, :] == pos[:, None],
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = []
    for name, fn in (("before (gather + masked mean)", before), ("after (CSR row means)", after)):
        for b in batches:
            torch.manual_seed(0)
            m = SimpleXModule(nu, ni, 64, 0.5, 0.1)
            opt = torch.optim.Adam(m.parameters(), lr=5e-3, fused=True)
            k = max(n_steps, n_steps * 4096 // b)
            dt, cpu = _per_step(partial(step, m, opt, b, fn), k)
            out.append(
                {
                    "model": "simplex",
                    "path": name,
                    "batch": b,
                    "s_per_step": dt,
                    "cpu_s_per_step": cpu,
                    "s_per_epoch": dt * -(-n // b),
                }
            )
            print(json.dumps(out[-1]), flush=True)
    return out


def _softmax_before(query, pos, neg, pos_ids, neg_ids, temperature):
    """The sampled softmax as it was: a cross-entropy over concatenated (B, 1 + N) logits."""
    pos_logit = (query * pos).sum(-1, keepdim=True) / temperature
    neg_logit = query @ neg.T / temperature
    hit = pos_ids.unsqueeze(1) == neg_ids.unsqueeze(0)
    neg_logit = neg_logit.masked_fill(hit, torch.finfo(neg_logit.dtype).min)
    logits = torch.cat([pos_logit, neg_logit], 1)
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long))


def softmax_steps(
    batch: int = 4096, n_neg: int = 2048, dim: int = 256, n_steps: int = 20, repeats: int = 3
) -> list[dict]:
    from recforge import losses as L

    def after(query, pos, neg, pos_ids, neg_ids, temperature):
        return L.sampled_softmax(
            query, pos, neg, pos_ids=pos_ids, neg_ids=neg_ids, temperature=temperature
        )

    g = torch.Generator().manual_seed(0)
    u0, p0 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    n0 = torch.randn(n_neg, dim, generator=g)
    pos_ids = torch.randint(0, 40_000, (batch,), generator=g)
    neg_ids = torch.randint(0, 40_000, (n_neg,), generator=g)
    neg_ids[:8] = pos_ids[:8]  # a few accidental hits

    def measure(loss_fn):
        u, p, n = (x.clone().requires_grad_() for x in (u0, p0, n0))

        def step():
            q, k, v = (F.normalize(x, dim=-1) for x in (u, p, n))
            loss = loss_fn(q, k, v, pos_ids, neg_ids, 0.2)
            loss.backward()
            return loss

        return _rusage_per_step(step, n_steps)

    out = []
    for rep in range(repeats):
        for name, fn in (
            ("before (cross-entropy over a concatenation)", _softmax_before),
            ("after (losses.sampled_softmax)", after),
        ):
            row = {"model": "sampled softmax", "path": name, "batch": batch, "repeat": rep}
            out.append(row | measure(fn))
            print(json.dumps(out[-1]), flush=True)
    return out


def _rusage_per_step(step, n_steps: int) -> dict:
    import resource

    step()  # warm-up
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n_steps):
        loss = step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "loss": float(loss.detach()),
        "user_ms": 1000 * (r1.ru_utime - r0.ru_utime) / n_steps,
        "sys_ms": 1000 * (r1.ru_stime - r0.ru_stime) / n_steps,
        "faults": (r1.ru_minflt - r0.ru_minflt) / n_steps,
    }


def gate0_steps(dims=(64, 512), n_steps: int = 5, repeats: int = 2) -> list[dict]:
    from recforge import losses as L
    from recforge.models.retrieval.simplex import SimpleXModule
    from recforge.models.retrieval.torch_base import history_mean_rows, sparse_mm

    nu, ni, b, n_neg = 30_000, 40_000, 4096, 2048

    def gated(m, users, rows):  # the formula before gate 0 left the user table out
        p = m.gate * m.user(users) + (1.0 - m.gate) * m.aggregate(sparse_mm(*rows, m.item.weight))
        return F.normalize(p, dim=-1)

    def measure(dim: int, skip: bool) -> dict:
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        m = SimpleXModule(nu, ni, dim, 0.0, 0.05)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)
        hist = rng.integers(1, ni + 1, (b, 20))

        def step():
            users, pos, neg = (rng.integers(0, k, s) for k, s in ((nu, b), (ni, b), (ni, n_neg)))
            tu, tp, tn = map(torch.from_numpy, (users, pos, neg))
            rows = history_mean_rows(hist, ni + 1)
            u = m.user_vectors_sparse(tu, rows) if skip else gated(m, tu, rows)
            loss = L.sampled_softmax(
                u, m.item_vectors(tp), m.item_vectors(tn), pos_ids=tp, neg_ids=tn, temperature=0.2
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        return _rusage_per_step(step, n_steps)

    out = []
    for dim in dims:
        for rep in range(repeats):
            for name, skip in (("before (user table read)", False), ("after (left out)", True)):
                row = {"model": f"simplex d{dim}", "path": name, "batch": b, "repeat": rep}
                out.append(row | measure(dim, skip))
                print(json.dumps(out[-1]), flush=True)
    return out


def _markdown(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def run(data_dir=None, out=None, *, models: tuple[str, ...] = ("lightgcn", "simplex")) -> dict:
    """The models' step times (module docstring); data_dir is unused (synthetic data)."""
    if tuple(models) in (("softmax",), ("gate0",)):
        torch.set_num_threads(1)
        rows = softmax_steps() if tuple(models) == ("softmax",) else gate0_steps()
        header = ("Step", "Path", "Repeat", "user ms/step", "system ms/step")
        cells = [
            (r["model"], r["path"], str(r["repeat"]), f"{r['user_ms']:.0f}", f"{r['sys_ms']:.0f}")
            + (f"{r['faults']:,.0f}", f"{r['loss']:.6f}")
            for r in rows
        ]
        return {"rows": rows, "markdown": _markdown(header + ("minor faults/step", "loss"), cells)}
    torch.set_num_threads(2)
    frame = _data()
    rows = lightgcn_steps(frame) if "lightgcn" in models else []
    rows += simplex_steps(frame) if "simplex" in models else []
    cells = [
        (r["model"], r["path"], str(r["batch"]), f"{r['s_per_step']:.2f}")
        + (f"{r['cpu_s_per_step']:.2f}", f"{r['s_per_epoch']:.0f}")
        for r in rows
    ]
    header = ("Model", "Path", "Batch", "s/step", "CPU s/step", "s/epoch")
    return {"rows": rows, "markdown": _markdown(header, cells)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lightgcn,simplex")
    print(run(models=tuple(ap.parse_args().models.split(",")))["markdown"])
