"""A verification as a table, as JSON, and as a picture (`verify --out DIR`).

Example:
    print(format_verification(result))
    write_picture(result, Path("out/verify-unet.png"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.rollout import config_edit as rc
from serving.rollout.verify import Verification

COLUMNS = (("GATE", 26), ("STABLE", 9), ("CANARY", 9), ("VALUE", 9), ("RULE", 28), ("RESULT", 6))
WORST = 4


def format_verification(result: Verification) -> str:
    """The gate table with a heading and a verdict line."""
    s = result.scores
    per_label = s.requests.get(rc.CANARY, 0)
    lines = [
        f"verify {result.model}: stable={result.versions[rc.STABLE]} "
        f"canary={result.versions[rc.CANARY]}",
        f"  golden: {result.golden.describe()}",
        f"  {result.rounds} rounds, {per_label} requests per version in {result.seconds:.1f} s; "
        f"gates: {result.gates.source}",
        "  ".join(f"{name:<{width}}" for name, width in COLUMNS) + "  NOTE",
    ]
    for row in result.rows:
        cells = (row.gate, row.stable, row.canary, row.value, row.rule, row.result)
        text = "  ".join(
            f"{cell:<{width}}" for cell, (_, width) in zip(cells, COLUMNS, strict=True)
        )
        lines.append(f"{text}  {row.note}".rstrip())
    gated = [row for row in result.rows if row.passed is not None]
    if result.passed:
        lines.append(f"verdict: PASS ({len(gated)} gates)")
    else:
        lines.append("verdict: FAIL: " + ", ".join(row.gate for row in result.failed))
    return "\n".join(lines)


def to_json(result: Verification) -> dict:
    """The verification as a JSON-ready dict (`--json`)."""
    return {
        "model": result.model,
        "kind": result.kind,
        "stable": result.versions[rc.STABLE],
        "canary": result.versions[rc.CANARY],
        "golden": result.golden.describe(),
        "gates_file": result.gates.source,
        "rounds": result.rounds,
        "seconds": round(result.seconds, 2),
        "passed": result.passed,
        "failed": [row.gate for row in result.failed],
        "gates": [
            {
                "gate": row.gate,
                "stable": row.stable,
                "canary": row.canary,
                "value": row.value,
                "rule": row.rule,
                "result": row.result,
                "note": row.note,
            }
            for row in result.rows
        ],
        "latency_ms": result.scores.latency_ms,
        # "tool" (the timed gRPC round trips) or "prometheus" (the server's histogram, --prometheus)
        "latency_source": result.scores.latency_source,
        "errors": {label: messages[:5] for label, messages in result.errors.items()},
        "shadow": result.scores.shadow,
    }


def worst_items(result: Verification, count: int = WORST) -> list[tuple[int, float]]:
    """(item index, agreement) of the items that disagree most, by the first agreement measure."""
    scored = [
        (i, min(values.values())) for i, values in enumerate(result.per_item) if values is not None
    ]
    return sorted(scored, key=lambda pair: pair[1])[:count]


def write_picture(result: Verification, path: Path) -> Path:
    """A PNG: the per-item agreement distribution, stable vs canary latencies, and the golden
    items that disagree most, each as its stable answer beside its canary answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from client.canary.comparisons import comparison
    from serving.rollout.verify import image_of

    compare = comparison(result.kind)
    worst = worst_items(result)
    fig = plt.figure(figsize=(12, 4 + 2.6 * max(len(worst), 1)), layout="constrained")
    grid = fig.add_gridspec(
        1 + max(len(worst), 1), 4, height_ratios=[1.6] + [1] * max(len(worst), 1)
    )
    fig.suptitle(
        f"{result.model}: canary {result.versions[rc.CANARY]} vs stable "
        f"{result.versions[rc.STABLE]}: {'PASS' if result.passed else 'FAIL'}"
    )

    hist = fig.add_subplot(grid[0, :2])
    names = [name for name in compare.measures.get("agreement", ())]
    for name in names:
        values = [d[name] for d in result.per_item if d is not None]
        if values:
            hist.hist(values, bins=np.linspace(0, 1, 41), alpha=0.6, label=name)
    hist.set_title("agreement per golden item (canary vs stable)")
    hist.set_xlabel("agreement (1 = identical)")
    hist.set_ylabel("items")
    if names:
        hist.legend(loc="upper left")

    lat = fig.add_subplot(grid[0, 2:])
    series = [
        np.asarray(result.latency_s.get(label, []), np.float64) * 1000
        for label in ("stable", "canary")
    ]
    if all(len(s) for s in series):
        lat.boxplot(series, tick_labels=["stable", "canary"], whis=(1, 99), showfliers=True)
    for label, values in zip(("stable", "canary"), series, strict=True):
        if len(values):
            p50, p99 = np.percentile(values, [50, 99])
            lat.annotate(
                f"p50 {p50:.1f}\np99 {p99:.1f}", xy=(1 if label == "stable" else 2, p99), fontsize=8
            )
    lat.set_title("latency per Predict (ms), interleaved, as the tool timed it")
    lat.set_ylabel("ms")

    for row, (index, _) in enumerate(worst, start=1):
        item = result.golden.items[index]
        image = image_of(item)
        panels = [("input", image)] if image is not None else []
        for label in ("stable", "canary"):
            answer = result.answers[label][index]
            panels.append((f"{label} {result.versions[label]}", compare.picture(image, answer)))
        for col, (title, picture) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(np.asarray(picture), cmap="gray" if np.asarray(picture).ndim == 2 else None)
            ax.set_title(f"{item.name}: {title}" if col == 0 else title, fontsize=9)
            ax.axis("off")
        note = fig.add_subplot(grid[row, len(panels)])
        note.axis("off")
        measures = ", ".join(f"{k} {v:.3f}" for k, v in result.per_item[index].items())
        note.text(0, 0.5, measures, fontsize=9, va="center", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
