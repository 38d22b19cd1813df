"""Loss speed, medrep vs lightly: forward + backward time of the same computation on the same inputs.

Pairs: ``nt_xent`` / ``NTXentLoss``, ``vicreg_loss`` / ``VICRegLoss``, ``barlow_twins_loss`` /
``BarlowTwinsLoss``, ``byol_loss`` / ``NegativeCosineSimilarity`` (lightly's BYOL loss; ours is
``2 - 2 cos``, the same computation up to that affine map, which the value check undoes), each at a
small and a large ``(batch, dim)``, float32 on CPU, with lightly's defaults set to ours where they
differ (NT-Xent temperature). Before timing, the values and input gradients of the two are checked to
agree to float precision. The two implementations alternate in rounds (medrep first in even rounds,
lightly first in odd ones) so that drift in machine load hits both; a round times ``reps`` calls of
each, and the spread of the per-round ratios (quartiles, min/max) is reported next to their median.

lightly is not a medrep dependency; install it for this benchmark only, without its dependencies
(torchvision etc. are not needed for these four losses)::

    pip install --no-deps lightly==1.6.0
    python benchmarks/loss_speed.py [--threads 2] [--rounds 21] [--budget 60] [--out benchmarks/results/loss_speed.json]

Only the four loss modules are loaded, not ``lightly.loss`` (whose ``__init__`` imports torchvision).
Goal: medrep no slower than lightly (ratio medrep / lightly <= 1) for every loss and size.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from readme_section import write_section

from medrep.losses import barlow_twins_loss, byol_loss, nt_xent, vicreg_loss

LIGHTLY_VERSION = "1.6.0"
RESULTS = Path(__file__).resolve().parent / "results"


def load_lightly() -> dict[str, type]:
    """lightly's four loss classes, imported without ``lightly.loss``'s and ``lightly.models``'s
    ``__init__`` (they import torchvision): those packages are stubbed with their real paths, so
    the loss files and the memory bank NT-Xent builds load as they are. ``lightly.models.utils``
    (also torchvision) is stubbed empty: the memory bank uses it only with a bank under DDP."""
    spec = importlib.util.find_spec("lightly")
    if spec is None or spec.origin is None:
        sys.exit(f"lightly is not installed; this benchmark compares against it: pip install --no-deps lightly=={LIGHTLY_VERSION}")
    root = Path(spec.origin).parent
    for name in ("lightly.models", "lightly.models.modules", "lightly.loss"):
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules.setdefault(name, package)
    sys.modules.setdefault("lightly.models.utils", types.ModuleType("lightly.models.utils"))
    modules = {m: importlib.import_module(f"lightly.loss.{m}")
               for m in ("ntx_ent_loss", "vicreg_loss", "barlow_twins_loss", "negative_cosine_similarity")}
    return {"nt_xent": modules["ntx_ent_loss"].NTXentLoss, "vicreg": modules["vicreg_loss"].VICRegLoss,
            "barlow_twins": modules["barlow_twins_loss"].BarlowTwinsLoss,
            "byol": modules["negative_cosine_similarity"].NegativeCosineSimilarity}


@dataclass(frozen=True)
class Pair:
    """``medrep(z1, z2) == offset + scale * lightly(z1, z2)``; the lightly module gets ``kwargs``."""

    medrep: Callable
    kwargs: dict
    sizes: tuple[tuple[int, int], ...]
    offset: float = 0.0
    scale: float = 1.0


PAIRS = {
    "nt_xent": Pair(lambda a, b: nt_xent(a, b, temperature=0.1), {"temperature": 0.1}, ((256, 128), (2048, 512))),
    "vicreg": Pair(lambda a, b: vicreg_loss(a, b)["loss"], {}, ((256, 128), (2048, 2048))),
    "barlow_twins": Pair(barlow_twins_loss, {}, ((256, 128), (2048, 8192))),
    "byol": Pair(byol_loss, {}, ((256, 128), (8192, 4096)), offset=2.0, scale=2.0),
}


def inputs(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g)
    z2 = 0.5 * z1 + torch.randn(n, d, generator=g)  # correlated views, as after training a little
    return z1.requires_grad_(), z2.requires_grad_()


def step(fn: Callable, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    z1.grad = z2.grad = None
    loss = fn(z1, z2)
    loss.backward()
    return loss.detach()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(pair: Pair, ours: Callable, theirs: Callable, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float]:
    """Relative differences of value and input gradients after the affine map; must be float32 rounding."""
    value = step(ours, z1, z2)
    grads = (z1.grad.clone(), z2.grad.clone())
    ref = pair.offset + pair.scale * step(theirs, z1, z2)
    diffs = {"value": rel(value, ref), "grad_z1": rel(grads[0], pair.scale * z1.grad), "grad_z2": rel(grads[1], pair.scale * z2.grad)}
    if max(diffs.values()) > 1e-4:
        sys.exit(f"values differ beyond float precision: {diffs}")
    return diffs


def time_calls(fn: Callable, z1: torch.Tensor, z2: torch.Tensor, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        step(fn, z1, z2)
    return (time.perf_counter() - start) / reps


def quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def measure(pair: Pair, lightly_cls: type, n: int, d: int, rounds: int, budget: float, round_s: float) -> dict:
    theirs = lightly_cls(**pair.kwargs)
    z1, z2 = inputs(n, d)
    diffs = check(pair, pair.medrep, theirs, z1, z2)
    single = min(time_calls(fn, z1, z2, 1) for fn in (pair.medrep, theirs) for _ in range(2))  # also warm-up
    reps = max(1, round(round_s / single))
    rounds = max(5, min(rounds, int(budget / (2 * reps * single))))
    rounds += rounds % 2 == 0  # odd: the median is one round's ratio
    ours_t, theirs_t = [], []
    gc.collect()
    for r in range(rounds):
        order = [(pair.medrep, ours_t), (theirs, theirs_t)]
        for fn, out in order if r % 2 == 0 else order[::-1]:
            out.append(time_calls(fn, z1, z2, reps))
    ratios = [o / t for o, t in zip(ours_t, theirs_t)]
    q1, q3 = quartiles(ratios)
    return {"n": n, "d": d, "reps": reps, "rounds": rounds, "medrep_ms": [1e3 * t for t in ours_t],
            "lightly_ms": [1e3 * t for t in theirs_t], "ratios": ratios, "ratio_median": statistics.median(ratios),
            "ratio_q1": q1, "ratio_q3": q3, "ratio_min": min(ratios), "ratio_max": max(ratios), "rel_diff": diffs}


def verdict(row: dict) -> str:
    """``faster`` / ``slower`` when the quartiles of the per-round ratios lie on one side of 1, else ``tie``
    (the difference is within the spread)."""
    if row["ratio_q3"] < 1:
        return "faster"
    if row["ratio_q1"] > 1:
        return "slower"
    return "tie"


def ms(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def table(result: dict, before: dict | None = None) -> str:
    head = "| loss | batch x dim | medrep ms | lightly ms | medrep / lightly | quartiles | min - max | verdict |"
    rule = "| --- | --- | --- | --- | --- | --- | --- | --- |"
    if before:
        head = head.replace("| medrep / lightly |", "| before | medrep / lightly |")
        rule += " --- |"
    old = {(r["loss"], r["n"], r["d"]): r for r in before["rows"]} if before else {}
    lines = [head, rule]
    for r in result["rows"]:
        b = old.get((r["loss"], r["n"], r["d"]))
        was = "" if not before else (f" {b['ratio_median']:.2f} |" if b else " - |")
        lines.append(f"| {r['loss']} | {r['n']} x {r['d']} | {ms(statistics.median(r['medrep_ms']))} | "
                     f"{ms(statistics.median(r['lightly_ms']))} |{was} {r['ratio_median']:.2f} | "
                     f"{r['ratio_q1']:.2f} - {r['ratio_q3']:.2f} | {r['ratio_min']:.2f} - {r['ratio_max']:.2f} | {verdict(r)} |")
    return "\n".join(lines)


def update_readme(results_dir: Path = RESULTS) -> None:
    """The README's loss-speed table from ``loss_speed.json``, with the ratios of ``loss_speed_before.json``."""
    now, before = results_dir / "loss_speed.json", results_dir / "loss_speed_before.json"
    if not now.exists():
        return
    result = json.loads(now.read_text())
    m = result["machine"]
    text = (f"Forward + backward time of each loss, medrep vs lightly {result['lightly_version']} on the same float32 inputs "
            f"(values and gradients equal to float precision), alternating in rounds on CPU with torch threads set to {m['torch_threads']}"
            f" (`benchmarks/loss_speed.py`; median over rounds; the quartiles and range are those of the per-round "
            f"ratios; load average {m['load_before'][0]:.2f} before the run). BYOL's lightly counterpart is "
            "`NegativeCosineSimilarity` (ours is `2 - 2 cos`)."
            + (" *before*: the ratio before this change (`loss_speed_before.json`)." if before.exists() else "")
            + "\n\n" + table(result, json.loads(before.read_text()) if before.exists() else None))
    write_section("loss-speed", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both implementations")
    parser.add_argument("--rounds", type=int, default=21, help="at most this many rounds per loss and size (at least 5)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timing per loss and size that cap the rounds")
    parser.add_argument("--round-seconds", type=float, default=0.2, help="time of one side of a round (sets reps)")
    parser.add_argument("--losses", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    parser.add_argument("--out", type=Path, default=RESULTS / "loss_speed.json")
    args = parser.parse_args()

    lightly = load_lightly()
    version = importlib.metadata.version("lightly")
    if version != LIGHTLY_VERSION:
        print(f"note: lightly {version} installed, the recorded results used {LIGHTLY_VERSION}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, lightly {version}, load average {load_before[0]:.2f}")
    print(f"{'loss':<14}{'batch x dim':>14}{'medrep ms':>11}{'lightly ms':>11}{'ratio':>7}{'quartiles':>13}{'min - max':>13}"
          f"{'rounds':>8}  verdict")
    for name in args.losses:
        pair = PAIRS[name]
        for n, d in pair.sizes:
            row = {"loss": name, **measure(pair, lightly[name], n, d, args.rounds, args.budget, args.round_seconds)}
            rows.append(row)
            print(f"{name:<14}{f'{n} x {d}':>14}{statistics.median(row['medrep_ms']):>11.3f}{statistics.median(row['lightly_ms']):>11.3f}"
                  f"{row['ratio_median']:>7.2f}{row['ratio_q1']:>7.2f}-{row['ratio_q3']:<5.2f}{row['ratio_min']:>7.2f}-{row['ratio_max']:<5.2f}"
                  f"{row['rounds']:>8}  {verdict(row)}", flush=True)
    result = {
        "lightly_version": version, "dtype": "float32", "goal": "ratio medrep / lightly <= 1 for every loss and size",
        "met": all(verdict(r) != "slower" for r in rows), "rows": rows,
        "machine": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "device": "cpu", "load_before": list(load_before), "load_after": list(os.getloadavg())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")
    update_readme(args.out.parent)


if __name__ == "__main__":
    main()
