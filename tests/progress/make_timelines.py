"""Write the recorded timelines test_eta.py replays, from finished sweeps' experiments:

    python tests/progress/make_timelines.py NAME=EXPERIMENT_DIR [...] > tests/progress/timelines.json

Per trial: its speed key (the sweep's), its start (Tune's experiment state), each evaluation's step and wall time (its run
record, train/<run>/metrics.json) and its end. The end is when the next trial took its slot (a
trial ends, the next pending one starts on the slot it freed); the last ones on each slot get
their last evaluation plus the median of those gaps. Times in seconds from the sweep's first start.
"""
from __future__ import annotations

import glob
import json
import statistics
import sys
from pathlib import Path

import yaml

from fixmatch_ray.config import RunConfig
from fixmatch_ray.launch.live import speed_key


def trial_starts(experiment: Path) -> dict[str, float]:
    """Tune trial id -> start time, from the newest experiment state."""
    state = json.loads(Path(sorted(glob.glob(str(experiment / "experiment_state-*.json")))[-1]).read_text())
    return {json.loads(a)["trial_id"]: json.loads(b)["start_time"] for a, b in state["trial_data"]}


def timeline(experiment: Path) -> dict:
    starts = trial_starts(experiment)
    slots = yaml.safe_load((experiment / "sweep.yaml").read_text())["max_concurrent_trials"]
    trials = []
    for run in sorted((experiment / "train").iterdir()):
        rec = json.loads((run / "metrics.json").read_text())
        if not rec["history"]:
            continue
        cfg = rec["config"]
        trials.append({"name": rec["trial"]["name"], "total": cfg["total_steps"],
                       "key": speed_key(RunConfig.from_dict(cfg)),
                       "start": starts[run.name.rsplit("-", 1)[1]],
                       "evals": [[row["step"], row["wall_time"]] for row in rec["history"]]})
    trials.sort(key=lambda t: t["start"])
    running, gaps = list(trials[:slots]), []
    for nxt in trials[slots:]:  # the slot that frees first is the one of the earliest last evaluation
        done = min(running, key=lambda t: t["evals"][-1][1])
        done["end"] = nxt["start"]
        gaps.append(nxt["start"] - done["evals"][-1][1])
        running.remove(done)
        running.append(nxt)
    for t in running:
        t["end"] = t["evals"][-1][1] + statistics.median(gaps)
    t0 = trials[0]["start"]
    for t in trials:
        t["start"], t["end"] = round(t["start"] - t0, 2), round(t["end"] - t0, 2)
        t["evals"] = [[s, round(w - t0, 2)] for s, w in t["evals"]]
    return {"slots": slots, "trials": trials}


if __name__ == "__main__":
    out = {name: timeline(Path(path)) for name, path in (arg.split("=", 1) for arg in sys.argv[1:])}
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
