"""Evaluation speed: vectorised `evaluate_ranking` vs a per-query NumPy loop on SYSU-sized trials.

SYSU-MM01 structure (docs/reference/protocols.md#sec-2-3): 3,803 infrared queries x 301 (all-search) / 112 (indoor)
visible gallery images, 2,048-d features with identity structure, 10 AGW trials per mode. Two loops
score the same distance matrices as `evaluate_ranking`, and all must agree to 1e-6 in CMC, mAP and
mINP: a lean NumPy loop (per query, but with the per-item steps vectorised) and a reference-style
loop that keeps the community eval_sysu's per-item Python steps (the identity deduplication and the
AP precision curve built item by item). The issue's target (>= 20x) is against the latter, which is
how the reference code works; both ratios are printed.
Then a large case (default 20,000 x 20,000) goes through the Evaluator, which computes distances
block by block and ranks queries in chunks, so the full matrix never exists at once.

    .venv/bin/python benchmarks/eval_speed.py [--large 20000] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from vireid.core import EvalTrial, Modality, Sample
from vireid.engine.evaluator import Evaluator
from vireid.metrics import evaluate_ranking
from vireid.protocols import sysu_trials

# Per-camera identity coverage and image counts of the SYSU test set (docs/reference/protocols.md#sec-2-3).
PIDS = list(range(1, 97))
PRESENT = {1: PIDS[:56], 2: PIDS[:56], 3: [p for p in PIDS if p not in (11, 21, 91)],
           4: PIDS[2:], 5: [p for p in PIDS if p != 2], 6: PIDS}


def sysu_like_samples(rng: np.random.Generator) -> list[Sample]:
    out = []
    for cam, pids in PRESENT.items():
        mod = Modality.INFRARED if cam in (3, 6) else Modality.VISIBLE
        for j, pid in enumerate(pids):
            # cam3 holds 1,883 images (20 or 21 per id) and cam6 1,920: 3,803 queries as in SYSU
            n = 20 + (j < 23) if cam == 3 else 20 if cam == 6 else int(rng.integers(18, 27))
            out += [Sample(f"cam{cam}/{pid:04d}/{i:04d}.jpg", pid, cam, mod) for i in range(1, n + 1)]
    return out


def _ranked(distmat, q_pids, g_pids):
    """Stable gallery order per query, the ranked identities, and 0/1 matches (both loops start here)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    pred_label = g_pids[indices]
    return indices, pred_label, (pred_label == q_pids[:, None]).astype(np.int32)


def _padded_cmc(id_match, max_rank):
    """0/1 CMC of one query from its deduplicated identity matches, cut at max_rank, last-value padded.

    Padding: docs/reference/protocols.md#p5.
    """
    cmc = id_match.cumsum()
    cmc[cmc > 1] = 1
    cmc = cmc[:max_rank]
    if len(cmc) < max_rank:
        cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
    return cmc


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    """The reference eval_sysu way, one query at a time, with a stable sort and last-value padding."""
    max_rank = min(max_rank, distmat.shape[1])
    indices, pred_label, matches = _ranked(distmat, q_pids, g_pids)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(len(distmat)):
        order = indices[q_idx]
        remove = (q_camids[q_idx] == 3) & (g_camids[order] == 2)
        keep = np.invert(remove)
        labels = pred_label[q_idx][keep]
        first = np.unique(labels, return_index=True)[1]
        dedup = labels[np.sort(first)]
        id_match = (dedup == q_pids[q_idx]).astype(np.int32)
        raw = matches[q_idx][keep]
        if not np.any(raw):
            continue
        all_cmc.append(_padded_cmc(id_match, max_rank))
        pos = np.where(raw == 1)[0]
        all_inp.append(raw.sum() / (pos.max() + 1.0))
        tmp = raw.cumsum()
        all_ap.append(np.sum(tmp[pos] / (pos + 1.0)) / raw.sum())
    return np.asarray(all_cmc, dtype=np.float64).mean(0), float(np.mean(all_ap)), float(np.mean(all_inp))


def reference_style_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    """Per query, the steps of the community's eval_sysu as docs/reference/protocols.md#sec-3 describes them,
    including its element-by-element Python work: the deduplicated identity list is rebuilt item by
    item in rank order, and the AP precision curve is built item by item. Stable sort and last-value
    padding as in vireid (the reference crashes on short rows, docs/reference/protocols.md#p5)."""
    max_rank = min(max_rank, distmat.shape[1])
    indices, pred_label, matches = _ranked(distmat, q_pids, g_pids)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(len(distmat)):
        order = indices[q_idx]
        keep = np.invert((q_camids[q_idx] == 3) & (g_camids[order] == 2))
        ranked = pred_label[q_idx][keep]
        first_positions = np.unique(ranked, return_index=True)[1]
        dedup = [ranked[i] for i in sorted(first_positions)]
        id_match = (np.asarray(dedup) == q_pids[q_idx]).astype(np.int32)
        raw = matches[q_idx][keep]
        if not np.any(raw):
            continue
        all_cmc.append(_padded_cmc(id_match, max_rank))
        pos = np.where(raw == 1)[0]
        all_inp.append(raw.sum() / (pos.max() + 1.0))
        running = raw.cumsum()
        precision = np.asarray([x / (i + 1.0) for i, x in enumerate(running)]) * raw
        all_ap.append(precision.sum() / raw.sum())
    return np.asarray(all_cmc, dtype=np.float64).mean(0), float(np.mean(all_ap)), float(np.mean(all_inp))


def sysu_case(device: str, dim: int = 2048) -> None:
    rng = np.random.default_rng(0)
    samples = sysu_like_samples(rng)
    centers = rng.normal(size=(97, dim)).astype(np.float32)
    index = {s: i for i, s in enumerate(samples)}
    pid = np.array([s.pid for s in samples])
    feats = centers[pid] + 4.0 * rng.normal(size=(len(samples), dim)).astype(np.float32)
    feats = torch.nn.functional.normalize(torch.from_numpy(feats), dim=1).to(device)
    total_vec = total_ref = total_style = 0.0
    worst = 0.0
    for mode in ("all", "indoor"):
        trials = sysu_trials(samples, mode=mode, trials=10)
        q = trials[0].query
        qf = feats[[index[s] for s in q]]
        q_pids = np.array([s.pid for s in q])
        q_cams = np.array([s.camid for s in q])
        vec_t = ref_t = style_t = 0.0
        for t in trials:
            gf = feats[[index[s] for s in t.gallery]]
            g_pids = np.array([s.pid for s in t.gallery])
            g_cams = np.array([s.camid for s in t.gallery])
            dist = -(qf @ gf.T)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, rule="sysu_location", cmc="identity")
            vec_t += time.perf_counter() - t0
            dist_np = dist.cpu().numpy()
            t0 = time.perf_counter()
            cmc, mAP, mINP = reference_eval(dist_np, q_pids, g_pids, q_cams, g_cams)
            ref_t += time.perf_counter() - t0
            worst = max(worst, float(np.abs(m.cmc - cmc).max()), abs(m.mAP - mAP), abs(m.mINP - mINP))
            t0 = time.perf_counter()
            cmc, mAP, mINP = reference_style_eval(dist_np, q_pids, g_pids, q_cams, g_cams)
            style_t += time.perf_counter() - t0
            worst = max(worst, float(np.abs(m.cmc - cmc).max()), abs(m.mAP - mAP), abs(m.mINP - mINP))
        total_vec += vec_t
        total_ref += ref_t
        total_style += style_t
        print(f"SYSU {mode:6s}: {len(q)} queries x {len(trials[0].gallery)} gallery, 10 trials | "
              f"vectorised {vec_t:.3f} s | lean NumPy loop {ref_t:.3f} s ({ref_t / vec_t:.1f}x) | "
              f"reference-style loop {style_t:.3f} s ({style_t / vec_t:.1f}x)")
    status = "OK" if worst <= 1e-6 else "MISMATCH"
    print(f"max |difference| in CMC/mAP/mINP over 20 trials: {worst:.2e} ({status}, tolerance 1e-6)")
    print(f"total: vectorised {total_vec:.3f} s vs lean loop {total_ref:.3f} s -> {total_ref / total_vec:.1f}x; "
          f"vs reference-style loop {total_style:.3f} s -> {total_style / total_vec:.1f}x (target >= 20x)")
    if worst > 1e-6:
        raise SystemExit(1)


def large_case(n: int, device: str, dim: int = 128) -> None:
    rng = np.random.default_rng(1)
    n_ids = max(2, n // 20)
    q = [Sample(f"q{i}", int(i % n_ids), 3 + 3 * (i % 2), Modality.INFRARED) for i in range(n)]
    g = [Sample(f"g{i}", int(i % n_ids), 1 + i % 4, Modality.VISIBLE) for i in range(n)]
    centers = rng.normal(size=(n_ids, dim)).astype(np.float32)
    trial = EvalTrial("large/trial0", q, g, "sysu_location", "identity", {"protocol": "large"})

    def extract(samples):
        pids = np.array([s.pid for s in samples])
        f = centers[pids] + 2.0 * rng.normal(size=(len(samples), dim)).astype(np.float32)
        return {"bn": torch.from_numpy(f).to(device)}

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    t0 = time.perf_counter()
    res = Evaluator([trial], features=("bn",)).run(extract)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    s = res.get("large", "bn").mean()
    full_gb = n * n * 4 / 2**30
    print(f"large: {n} x {n} ({full_gb:.1f} GiB as one float32 matrix) in {dt:.1f} s; peak RSS {peak:.0f} MiB "
          f"(was {before:.0f} MiB before); R1 {100 * s['rank1']:.2f}%, mAP {100 * s['mAP']:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=20000, help="size of the large square case (0 to skip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    sysu_case(args.device)
    if args.large:
        large_case(args.large, args.device)


if __name__ == "__main__":
    main()
