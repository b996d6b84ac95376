"""Behaviours of SegArena's test submission images (one mode per image, see ../<name>/predict.sh)."""
import os
import sys
import time
from pathlib import Path

import numpy as np

IN, OUT = Path("/workspace/inputs"), Path("/workspace/outputs")


def predict(path: Path, *, bad_shape: bool = False) -> np.ndarray:
    """Fill box i with label i (a weak but real segmentation)."""
    data = np.load(path, allow_pickle=False)
    imgs, boxes = data["imgs"], data["boxes"]
    three_d = path.name.startswith("3DBox")
    shape = imgs.shape if three_d else imgs.shape[:2]
    if bad_shape:
        shape = tuple(n + 1 for n in shape)
    segs = np.zeros(shape, dtype=np.uint8)
    for i, box in enumerate(np.asarray(boxes).reshape(len(boxes), -1), start=1):
        box = [int(v) for v in box]
        if three_d:
            x0, y0, z0, x1, y1, z1 = box
            segs[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = i
        else:
            x0, y0, x1, y1 = box
            segs[y0:y1 + 1, x0:x1 + 1] = i
    return segs


def write_all(**kw) -> None:
    for f in sorted(IN.glob("*.npz")):
        np.savez_compressed(OUT / f.name, segs=predict(f, **kw))


def probe() -> None:
    try:
        open("/workspace/probe", "w").close()
        rootfs = "rw"
    except OSError:
        rootfs = "ro"
    try:
        open(IN / "probe", "w").close()
        inputs = "rw"
    except OSError:
        inputs = "ro"
    print(f"uid={os.getuid()} rootfs={rootfs} inputs={inputs} home={os.environ.get('HOME')} "
          f"files={sorted(p.name for p in IN.iterdir())}", flush=True)


def main(mode: str) -> int:
    if mode == "correct":
        probe()
        write_all()
    elif mode == "memory":
        print("allocating 2 GiB", flush=True)
        block = np.ones(2 * 1024**3 // 8)
        print(block.sum())
    elif mode == "sleep":
        print("sleeping", flush=True)
        time.sleep(3600)
    elif mode == "slow":
        print("thinking for 2 s", flush=True)
        time.sleep(2)
        write_all()
    elif mode == "crash":
        print("loading model", flush=True)
        raise RuntimeError("model weights not found: /workspace/weights.pt")
    elif mode == "nothing":
        print("done (wrote nothing)")
    elif mode == "wrongshape":
        write_all(bad_shape=True)
    elif mode == "pickle":
        for f in sorted(IN.glob("*.npz")):
            with open(OUT / f.name, "wb") as fh:
                np.savez(fh, segs=np.array([{"evil": 1}], dtype=object))
    elif mode == "network":
        nics = sorted(os.listdir("/sys/class/net"))
        print(f"interfaces: {' '.join(nics)}", flush=True)
        if nics != ["lo"]:
            write_all()  # the escape worked: behave like a correct image
            return 0
        print(f"network unreachable: only {' '.join(nics)}", file=sys.stderr)
        return 3
    elif mode == "forkbomb":
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(120)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print(f"fork failed after {children} children: {exc}", file=sys.stderr, flush=True)
            return 2
    elif mode == "stdout":
        line = ("y" * 1023 + "\n").encode()
        out = sys.stdout.buffer
        out.write(b"FIRST LINE\n")
        for _ in range(100 * 1024):
            out.write(line)
        out.write(b"LAST LINE\n")
        out.flush()
        write_all()
    elif mode == "outflood":
        # fills the one writable host directory: must be stopped before it fills the worker's disk
        block = b"z" * (1024 * 1024)
        with open(OUT / "flood.bin", "wb") as fh:
            for _ in range(2048):  # 2 GiB unless stopped
                fh.write(block)
                fh.flush()
        write_all()
    elif mode == "cpuburn":
        # deterministic, single-threaded CPU-bound work (bench/sandbox.py): a fixed integer loop
        acc = 0
        for i in range(12_000_000):
            acc = (acc + i * i) % 1_000_003
        print(acc)
        write_all()
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
