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

    nice -n 10 python -m benchmarks.cf_steps
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


def run(data_dir=None, out=None, *, models: tuple[str, ...] = ("lightgcn", "simplex")) -> dict:
    """The models' step times (module docstring); data_dir is unused (synthetic data)."""
    torch.set_num_threads(2)
    frame = _data()
    rows = lightgcn_steps(frame) if "lightgcn" in models else []
    rows += simplex_steps(frame) if "simplex" in models else []
    lines = [
        "| Model | Path | Batch | s/step | CPU s/step | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['path']} | {r['batch']} | {r['s_per_step']:.2f} | "
        f"{r['cpu_s_per_step']:.2f} | {r['s_per_epoch']:.0f} |"
        for r in rows
    ]
    return {"rows": rows, "markdown": "\n".join(lines)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lightgcn,simplex")
    print(run(models=tuple(ap.parse_args().models.split(",")))["markdown"])
