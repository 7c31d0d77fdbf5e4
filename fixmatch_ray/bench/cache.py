"""The folder dataset's decoded cache: how large, how fast to build, and what each process holds.

    python -m fixmatch_ray.bench.cache [--images 50000] [--size 32] [--readers 2]

Writes ``--images`` PNG files of ``--size`` px (10 classes) into a temporary class-folder layout,
decodes them into the cache (timed), then starts ``--readers`` processes that each map the entry
and read every image once (as a training process does over an epoch), and prints each reader's
memory from ``/proc/self/smaps_rollup``: resident (Rss), its proportional share (Pss: shared pages
divided among the processes mapping them) and what it holds privately. Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

READER = """
import json, sys
import numpy as np
from fixmatch_ray.data.datasets import run_spec
spec = run_spec("folder", sys.argv[1])
data = spec.load(sys.argv[1], "train+unlabeled", False)
checksum = 0
for lo in range(0, len(data), 4096):
    checksum += int(np.asarray(data.images[lo:lo + 4096], dtype=np.uint64).sum())
print("ready", flush=True)
sys.stdin.readline()  # every reader has read everything: measure while all map the entry
mem = {}
for line in open("/proc/self/smaps_rollup"):
    key, *rest = line.split()
    if key.rstrip(":") in ("Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty"):
        mem[key.rstrip(":")] = int(rest[0]) * 1024
print(json.dumps({"images": len(data), "checksum": checksum, **mem}))
"""
BASELINE = """
import json
import numpy as np
from fixmatch_ray.data.datasets import run_spec
mem = {}
for line in open("/proc/self/smaps_rollup"):
    key, *rest = line.split()
    if key.rstrip(":") in ("Rss", "Pss", "Private_Dirty"):
        mem[key.rstrip(":")] = int(rest[0]) * 1024
print(json.dumps(mem))
"""


def write_images(root: str, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = os.path.join(root, "train" if (i // 10) % 10 else "test", f"class{i % 10}")  # 1 in 10: test
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.bench.cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--readers", type=int, default=2)
    args = p.parse_args(argv)
    from fixmatch_ray.data.datasets import run_spec

    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        write_images(tmp, args.images, args.size)
        print(f"wrote {args.images} PNG files of {args.size}x{args.size} in {time.perf_counter() - tic:.1f} s")
        tic = time.perf_counter()
        spec = run_spec("folder", tmp)
        built = time.perf_counter() - tic
        entry = os.path.getsize(os.path.join(spec.facts["cache"], "images.npy"))
        print(f"decoded into the cache in {built:.1f} s ({args.images / built:.0f} images/s); images.npy "
              f"{_mib(entry)} (= N·S·S·3 bytes + a 128-byte header: {args.images * args.size**2 * 3 + 128} bytes)")
        tic = time.perf_counter()
        run_spec("folder", tmp)
        print(f"a later run finds the entry in {time.perf_counter() - tic:.2f} s (listing and stat of every file)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        base = json.loads(subprocess.run([sys.executable, "-c", BASELINE], env=env, capture_output=True,
                                         text=True, check=True).stdout)
        procs = [subprocess.Popen([sys.executable, "-c", READER, tmp], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(args.readers)]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        lines = []
        for proc in procs:  # all measure at once, then exit
            proc.stdin.write("\n")
            proc.stdin.flush()
        for proc in procs:
            lines.append(proc.stdout.readline())
        for proc in procs:
            proc.communicate()
        for i, line in enumerate(lines):
            out = json.loads(line)
            private = out["Private_Clean"] + out["Private_Dirty"]
            print(f"reader {i}: {out['images']} images read; Rss {_mib(out['Rss'])}, Pss {_mib(out['Pss'])}, "
                  f"private {_mib(private)} (an idle interpreter with the package imported: Rss "
                  f"{_mib(base['Rss'])}, private dirty {_mib(base['Private_Dirty'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
