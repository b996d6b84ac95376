"""``segarena testset`` commands: generate, verify, preview (a real PNG), import; one-line errors, exit 2."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from data_manifests.cli import app
from data_manifests.sets import SETS_DIR

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny"
    r = runner.invoke(app, ["generate", "--size", "tiny", "--seed", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "27 cases" in r.output
    return out


def _read_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color = hdr[:4]
    assert depth == 8 and color == 2
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_generate_then_verify(tiny_dir):
    assert (tiny_dir / "manifest.json").read_bytes() == (SETS_DIR / "tiny.json").read_bytes()
    r = runner.invoke(app, ["verify", str(SETS_DIR / "tiny.json"), "--data", str(tiny_dir)])
    assert r.exit_code == 0 and '"ok": true' in r.output


def test_verify_altered_file_is_one_line_exit_2(tiny_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    f = copy / "gts" / "2DBox_Fundus_0002.npz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    r = runner.invoke(app, ["verify", str(copy / "manifest.json"), "--data", str(copy)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: case 2DBox_Fundus_0002: ground truth file")


def test_preview_writes_a_contact_sheet(tiny_dir, tmp_path):
    out = tmp_path / "sheet.png"
    r = runner.invoke(app, ["preview", str(tiny_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    img = _read_png(out)
    assert img.shape[0] > 1000 and img.shape[1] > 1000
    assert len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 200, "a picture, not a blank"
    r = runner.invoke(app, ["preview", str(tmp_path / "missing.json"), "--out", str(out)])
    assert r.exit_code == 2 and r.output.startswith("error: manifest")


def test_import_and_errors(tiny_dir, tmp_path):
    r = runner.invoke(app, ["import", str(tiny_dir), "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert "27 cases imported, 0 skipped" in r.output
    r = runner.invoke(app, ["import", str(tmp_path / "nope"), "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "is not a directory" in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["import", str(tmp_path / "empty"), "--out", str(tmp_path / "m2.json")])
    assert r.exit_code == 2 and "no case under" in r.output
    r = runner.invoke(app, ["generate", "--size", "huge", "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "unknown size 'huge'" in r.output
