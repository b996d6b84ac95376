"""``evaluator.interactive`` (profile ``cvpr25``) against the CVPR 2025 reference ``CVPR25_iter_eval.py``.

The fixture ``fixtures/cvpr25_reference.json`` was recorded by ``bench/cvpr25_reference.py``: the reference script,
unmodified (JunMa11/CVPR-MedSegFMCompetition at the commit named in the fixture), run here on the 27 3D cases of the
synthetic ``tiny`` set for seeds 0, 1, 2 with six generated predictions each (``tests/evaluator/cvpr25_cases.py``),
a stub ``docker`` playing the container and recording every input npz the reference wrote. This test regenerates
the same cases and predictions (their sha256 must equal the recorded ones) and recomputes, with SegArena's own code,
every click, every iteration input's keys and dtypes, every per-iteration DSC / NSD and both AUCs: all must be equal
exactly (``==`` on floats). No network, nothing of the reference vendored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from evaluator.interactive import (
    accumulate_clicks,
    auc,
    iteration_inputs,
    next_clicks,
    score_iteration,
    write_iteration_npz,
)
from tests.evaluator.cvpr25_cases import ITERATIONS, cases, predictions, sha256

FIXTURE = Path(os.environ.get("SEGARENA_CVPR25_FIXTURE") or Path(__file__).with_name("fixtures") / "cvpr25_reference.json")


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list:
    return list(cases(tmp_path_factory.mktemp("cvpr25")))


def test_reference_equality(recorded: dict, generated: list, tmp_path: Path) -> None:
    refs = {c["name"]: c for c in recorded["cases"]}
    assert len(generated) == len(refs) >= 27
    n_clicks = n_none = n_values = 0
    for index, (name, arrays, gts) in enumerate(generated):
        ref = refs[name]
        assert ref["index"] == index
        assert sha256(gts) == ref["gts_sha256"], f"{name}: the generator changed; rerun bench/cvpr25_reference.py"
        preds = predictions(index, gts)
        assert [sha256(p) for p in preds] == ref["preds_sha256"], f"{name}: predictions changed; rerun the bench"
        spacing = arrays["spacing"]
        per_iteration: list = []
        dscs, nsds = [], []
        for it in range(ITERATIONS + 1):
            rec = ref["inputs"][it]
            assert rec["iteration"] == it
            if it == 0:
                ours = iteration_inputs(arrays, iteration=0, prompt="box")
            else:
                clicks = accumulate_clicks(per_iteration)
                ours = iteration_inputs(arrays, iteration=it, prompt="box", clicks=clicks, prev_pred=preds[it - 1])
                got = [{"fg": d["fg"], "bg": d["bg"]} for d in clicks["clicks"]]
                want = [{"fg": d["fg"], "bg": d["bg"]} for d in rec["clicks"]]
                assert got == want, f"{name} iteration {it}: clicks differ"
                assert clicks["clicks_order"] == rec["clicks_order"], f"{name} iteration {it}: clicks_order"
                assert sha256(ours["prev_pred"]) == rec["prev_pred_sha256"]
                n_clicks += sum(len(d["fg"]) + len(d["bg"]) for d in got)
                n_none += sum(o.count(None) for o in clicks["clicks_order"])
            assert sorted(ours) == rec["keys"], f"{name} iteration {it}: input keys"
            path = tmp_path / f"{it}.npz"
            write_iteration_npz(path, ours)
            with np.load(path, allow_pickle=True) as f:
                saved = {k: f[k] for k in f.files}
            dt = {k: v.dtype.str for k, v in saved.items()}
            assert dt == rec["dtypes"], f"{name} iteration {it}: input dtypes {dt} != {rec['dtypes']}"
            assert {k: list(v.shape) for k, v in saved.items()} == rec["shapes"]
            if it:
                types = [sorted({type(x).__name__ for c in e["fg"] + e["bg"] for x in c})
                         for e in saved["clicks"].tolist()]
                # the reference's coordinates are numpy.int64 (np.argwhere rows); SegArena writes plain ints so that
                # the pickle loads under numpy 1.x too (docs/interactive.md): same values, int instead of int64
                assert types == [["int"] if d["coord_types"] == ["int64"] else d["coord_types"] for d in rec["clicks"]]
                assert saved["clicks_order"].tolist() == rec["clicks_order"]
            s = score_iteration(gts, preds[it], spacing=spacing, profile="cvpr25")
            dscs.append(s.dsc)
            nsds.append(s.nsd)
            assert s.dsc == ref["metrics"][f"DSC_{it + 1}"], f"{name} iteration {it}: DSC"
            assert s.nsd == ref["metrics"][f"NSD_{it + 1}"], f"{name} iteration {it}: NSD"
            n_values += 2
            per_iteration.append(next_clicks(gts, preds[it], spacing=spacing, profile="cvpr25"))
        assert auc(dscs, profile="cvpr25") == ref["metrics"]["DSC_AUC"], name
        assert auc(nsds, profile="cvpr25") == ref["metrics"]["NSD_AUC"], name
        assert dscs[-1] == ref["metrics"]["DSC_Final"] and nsds[-1] == ref["metrics"]["NSD_Final"]
    # the fixture exercises what it should: many clicks, classes already perfect (no click) and both click kinds
    assert n_clicks > 300 and n_none > 100 and n_values == len(refs) * 12
    kinds = {k for c in recorded["cases"] for i in c["inputs"] for o in i.get("clicks_order", []) for k in o}
    assert kinds == {"fg", "bg", None}
