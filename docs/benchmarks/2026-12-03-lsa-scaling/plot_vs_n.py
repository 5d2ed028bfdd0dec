"""Accuracy against n for the one-H200 LSA scaling table (2026-12-03), from the files in this folder.

n = 4, 6, 12 are this folder's runs (scaling_1gpu.sh, one cold 400-s call each); n = 9 is the
shipped recipe's test runs (docs/benchmarks/2026-12-03-lsa-ship, seeds 0 and 1: the same recipe,
with the LR on the step clock and a 7,700-step cap that neither seed reached). Test: the last
evaluation of each run; train: the last logged training batch's exact accuracy.
    python docs/benchmarks/2026-12-03-lsa-scaling/plot_vs_n.py
writes scaling_vs_n.png beside this file.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(__file__).resolve().parent
ship = here.parent / "2026-12-03-lsa-ship"
runs = {4: [here / "calls/trm-lsa/lsa400-n4"], 6: [here / "calls/trm-lsa/lsa400-n6"],
        9: [ship / "seed0", ship / "seed1"], 12: [here / "calls/trm-lsa/lsa400-n12"]}


def last(records, key):
    return [r for r in records if key in r][-1][key]


points = []
for n, dirs in runs.items():
    for d in dirs:
        records = [json.loads(line) for line in open(d / "metrics.jsonl") if line.strip()]
        points.append((n, 100 * last(records, "eval/lsa/optimal_cost_rate"),
                       100 * last(records, "eval/lsa/projected_optimal_cost_rate"),
                       100 * last(records, "train/exact_accuracy")))
        print(f"n={n} {d.name}: test optimal cost {points[-1][1]:.1f}%, projected {points[-1][2]:.1f}%, "
              f"train exact (last batch) {points[-1][3]:.1f}%")

fig, ax = plt.subplots(figsize=(5.5, 3.6))
for column, label, marker in ((1, "test optimal cost (raw)", "o"), (2, "test optimal cost (Hungarian projection)", "s"),
                              (3, "train exact (last batch)", "^")):
    ax.plot([p[0] for p in points], [p[column] for p in points], marker, label=label, alpha=0.8)
ax.set_xlabel("n (LSA n x n)")
ax.set_ylabel("%")
ax.set_xticks(sorted(runs))
ax.set_ylim(0, 102)
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower left")
ax.set_title("cfg_lsa_400s, 400 s cold on one H200 (n = 9: two seeds)", fontsize=9)
fig.tight_layout()
fig.savefig(here / "scaling_vs_n.png", dpi=120)
print("wrote", here / "scaling_vs_n.png")
