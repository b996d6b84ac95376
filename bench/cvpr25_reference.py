"""Run the CVPR 2025 interactive reference (``CVPR25_iter_eval.py``, JunMa11/CVPR-MedSegFMCompetition), unmodified,
on generated cases and record its clicks and numbers as the fixture ``tests/evaluator/fixtures/cvpr25_reference.json``
that ``tests/evaluator/test_interactive_reference.py`` compares ``evaluator.interactive`` against.

Nothing of the reference is committed: its two files are read from a local mirror (the ``fetch`` of the public
repository, a git directory) at a pinned commit into a scratch folder and run there. What it needs besides numpy,
scipy and pandas: ``connected-components-3d`` and ``tqdm`` (``pip install --target DEPS connected-components-3d
tqdm``); ``torch`` is only asked ``cuda.is_available()``, so a stub answering False is put on its path (the
reference then uses its CPU branch: ``scipy.ndimage.distance_transform_edt``); a ``sitecustomize`` restores the
numpy 1.x aliases ``np.Inf`` / ``np.NaN`` it uses (removed in numpy 2). ``docker`` is a stub on ``PATH`` that
plays the participant's container: it records the input npz the reference wrote (keys, dtypes, ``clicks``,
``clicks_order``, ``prev_pred``) and writes the case's next prediction from ``tests/evaluator/cvpr25_cases.py``.

Usage::

    .venv/bin/python bench/cvpr25_reference.py --deps /tmp/refdeps \\
        [--mirror /work/.mirror/JunMa11+CVPR-MedSegFMCompetition/repo] [--work /tmp/cvpr25ref]

Last line: the number of cases and iterations recorded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stack import print_stack  # noqa: E402 (bench/ is the script directory, first on sys.path)

from tests.evaluator.cvpr25_cases import ITERATIONS, cases, predictions, sha256  # noqa: E402

COMMIT = "748e862d162e3e3ee8197bd4085b19bbbe0bb8a0"
FIXTURE = ROOT / "tests" / "evaluator" / "fixtures" / "cvpr25_reference.json"

TORCH_STUB = '''class cuda:
    @staticmethod
    def is_available():
        return False

    @staticmethod
    def empty_cache():
        return None
'''

#: The reference (and the 2024 SurfaceDice.py it imports) was written for numpy 1.x: it uses ``np.Inf`` / ``np.NaN``,
#: removed in numpy 2.0. This puts the aliases back (same objects as ``np.inf`` / ``np.nan``) at interpreter start.
SITECUSTOMIZE = """import numpy as _np
for _alias, _value in (("Inf", _np.inf), ("NaN", _np.nan), ("NAN", _np.nan), ("Infinity", _np.inf)):
    if not hasattr(_np, _alias):
        setattr(_np, _alias, _value)
"""

DOCKER_STUB = r'''#!{python}
"""docker stub: `image load` / `rmi` succeed; `container run` plays the participant's container."""
import hashlib, json, os, sys
import numpy as np

args = sys.argv[1:]
if not args or args[0] != "container":
    sys.exit(0)
run = os.getcwd()
(name,) = [n for n in os.listdir(os.path.join(run, "inputs")) if n.endswith(".npz")]
log = os.path.join(run, "log", name + ".jsonl")
it = sum(1 for _ in open(log)) if os.path.exists(log) else 0
with np.load(os.path.join(run, "inputs", name), allow_pickle=True) as f:
    d = {{k: f[k] for k in f.files}}
rec = {{"iteration": it, "keys": sorted(d), "dtypes": {{k: v.dtype.str for k, v in d.items()}},
       "shapes": {{k: list(v.shape) for k, v in d.items()}}}}
if "clicks" in d:
    rec["clicks"] = [{{"fg": [[int(x) for x in c] for c in e["fg"]], "bg": [[int(x) for x in c] for c in e["bg"]],
                       "coord_types": sorted({{type(x).__name__ for c in e["fg"] + e["bg"] for x in c}})}}
                     for e in d["clicks"].tolist()]
    rec["clicks_order"] = d["clicks_order"].tolist()
if "prev_pred" in d:
    a = np.ascontiguousarray(d["prev_pred"])
    rec["prev_pred_sha256"] = hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()
os.makedirs(os.path.dirname(log), exist_ok=True)
with open(log, "a") as f:
    f.write(json.dumps(rec) + "\n")
segs = np.load(os.path.join(run, "preds", name[:-4], f"{{it}}.npy"))
np.savez_compressed(os.path.join(run, "outputs", name), segs=segs)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default="/work/.mirror/JunMa11+CVPR-MedSegFMCompetition/repo")
    ap.add_argument("--deps", required=True, help="folder holding cc3d and tqdm (pip install --target)")
    ap.add_argument("--work", default="/tmp/cvpr25ref")
    ap.add_argument("--out", default=str(FIXTURE))
    a = ap.parse_args()
    print_stack("numpy", "scipy")  # the stack this figure comes from (bench/_stack.py)
    work = Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    ref, stubs, binp, run = work / "ref", work / "stubs", work / "bin", work / "run"
    for p in (ref, stubs / "torch", binp, run / "imgs", run / "gts", run / "docker", run / "preds", run / "log"):
        p.mkdir(parents=True)
    for name in ("CVPR25_iter_eval.py", "SurfaceDice.py"):
        src = subprocess.run(["git", "--git-dir", a.mirror, "show", f"{COMMIT}:{name}"], check=True,
                             capture_output=True).stdout
        (ref / name).write_bytes(src)
    (stubs / "torch" / "__init__.py").write_text(TORCH_STUB)
    (stubs / "sitecustomize.py").write_text(SITECUSTOMIZE)
    docker = binp / "docker"
    docker.write_text(DOCKER_STUB.format(python=sys.executable))
    docker.chmod(0o755)
    (run / "docker" / "team.tar.gz").write_bytes(b"")

    recorded: dict[str, dict] = {}
    for index, (name, arrays, gts) in enumerate(cases(work / "data")):
        np.savez_compressed(run / "imgs" / name, **arrays)
        np.savez_compressed(run / "gts" / name, gts=gts)
        (run / "preds" / name[:-4]).mkdir()
        preds = predictions(index, gts)
        for it, p in enumerate(preds):
            np.save(run / "preds" / name[:-4] / f"{it}.npy", p)
        recorded[name] = {"name": name, "index": index, "gts_sha256": sha256(gts),
                          "spacing": [float(v) for v in arrays["spacing"]],
                          "preds_sha256": [sha256(p) for p in preds]}

    env = {**os.environ, "PATH": f"{binp}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ref), str(stubs), a.deps])}
    subprocess.run([sys.executable, str(ref / "CVPR25_iter_eval.py"), "-i", "imgs", "-o", "seg", "-d", "docker",
                    "-val_gts", "gts"], cwd=run, env=env, check=True, stdout=subprocess.DEVNULL)

    with open(run / "seg" / "team" / "team_metrics.csv", newline="") as f:
        rows = {r["CaseName"]: r for r in csv.DictReader(f)}
    keys = ["DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "num_class",
            *[f"DSC_{i}" for i in range(1, ITERATIONS + 2)], *[f"NSD_{i}" for i in range(1, ITERATIONS + 2)]]
    n_inputs = 0
    for name, rec in recorded.items():
        r = rows[name]
        rec["metrics"] = {k: float(r[k]) if r[k] != "" else None for k in keys}
        rec["inputs"] = [json.loads(line) for line in (run / "log" / f"{name}.jsonl").read_text().splitlines()]
        n_inputs += len(rec["inputs"])

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            sys.path.insert(0, a.deps)
            return metadata.version(pkg)

    fixture = {
        "reference": {"repository": "JunMa11/CVPR-MedSegFMCompetition", "commit": COMMIT,
                      "files": ["CVPR25_iter_eval.py", "SurfaceDice.py"], "run": "unmodified, CPU branch"},
        "generated_by": "bench/cvpr25_reference.py (cases and predictions: tests/evaluator/cvpr25_cases.py)",
        "versions": {p: version(p) for p in ("numpy", "scipy", "pandas", "connected-components-3d")},
        "cases": list(recorded.values()),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(recorded)} cases, {n_inputs} container inputs -> {out}")


if __name__ == "__main__":
    main()
