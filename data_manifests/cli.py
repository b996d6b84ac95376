"""``segarena testset …``: generate, import, preview and verify test sets.

Every error a user can cause prints one line starting with ``error:`` and exits with code 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(help="Test sets: synthetic generator, importer for real data, preview, verification.",
                  no_args_is_help=True, add_completion=False)


def _fail(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


@app.command()
def generate(
    size: str = typer.Option("tiny", "--size", help="micro (smoke tests), tiny (CI), small (demos) or full (challenge-sized)"),
    seed: int | None = typer.Option(None, "--seed", help="random seed; same seed, same bytes. Omit it to draw a "
                                       "private seed; seeds below 2**32 (0 = the built-in sets') are public: only "
                                       "demo challenges accept such a set"),
    out: Path = typer.Option(..., "--out", help="data root to write inputs/, gts/ and manifest.json into"),
    box_jitter: int = typer.Option(0, "--box-jitter", help="widen each box side by up to N pixels (not z)"),
    gray_as_rgb: bool = typer.Option(False, "--gray-as-rgb", help="store grayscale 2D images as (H,W,3)"),
) -> None:
    """Generate a synthetic test set in the challenge's file format."""
    import secrets

    from .generator import SIZES
    from .generator import generate as _generate
    from .schema import PRIVATE_SEED_MIN, is_public_seed

    if size not in SIZES:
        _fail(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if seed is None:
        seed = PRIVATE_SEED_MIN + secrets.randbelow(2**63 - PRIVATE_SEED_MIN)
    if seed < 0 or box_jitter < 0:
        _fail("seed and box jitter must be >= 0")
    t0 = time.perf_counter()
    try:
        m = _generate(size, seed, out, box_jitter=box_jitter, gray_as_rgb=gray_as_rgb)
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror or exc}")
    total = sum(c.input.bytes + c.gt.bytes for c in m.cases)
    if is_public_seed(seed):
        typer.echo(f"note: seed {seed} is public (below 2**32: anyone can regenerate this set and its ground truth); "
                   "only a demo challenge accepts it. Omit --seed to draw a private one.")
    else:
        typer.echo("private seed (recorded in the manifest only: keep manifest.json and gts/ on the server)")
    typer.echo(f"{len(m.cases)} cases ({', '.join(m.modalities())}), {total / 1e6:.1f} MB, "
               f"{time.perf_counter() - t0:.1f} s → {Path(out) / 'manifest.json'}")


@app.command("import")
def import_(
    src: Path = typer.Argument(..., help="folder with challenge .npz (imgs/ + gts/) or NIfTI images and labels"),
    out: Path = typer.Option(..., "--out", help="manifest file to write"),
    data_out: Path | None = typer.Option(None, "--data-out", help="where converted files go (default MANIFEST_data/)"),
    spacing_order: str = typer.Option("auto", "--spacing-order", help="auto, xyz or zyx: how stored 3D spacing is read"),
    modality: str | None = typer.Option(None, "--modality", help="modality when names do not say it"),
    set_id: str | None = typer.Option(None, "--id", help="test-set id (default: folder name)"),
) -> None:
    """Import a real challenge folder: checksums, modality, 2D/3D, spacing in array order."""
    from .importer import import_dir

    if not src.is_dir():
        _fail(f"{src} is not a directory")
    if spacing_order not in ("auto", "xyz", "zyx"):
        _fail("--spacing-order must be auto, xyz or zyx")
    res = import_dir(src, out, data_out=data_out, spacing_order=spacing_order, modality=modality, set_id=set_id)
    for note in res.notes:
        typer.echo(f"note: {note}")
    for path, reason in res.skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    if res.manifest is None:
        _fail(f"no case under {src} could be imported ({len(res.skipped)} skipped)")
    typer.echo(f"{len(res.manifest.cases)} cases imported, {len(res.skipped)} skipped → {out} (data root {res.data_root})")


@app.command()
def preview(
    source: Path = typer.Argument(..., help="manifest.json, or a data root containing manifest.json"),
    out: Path = typer.Option(Path("sheet.png"), "--out", help="PNG contact sheet to write"),
    data: Path | None = typer.Option(None, "--data", help="data root (default: the manifest's folder)"),
    per_modality: int = typer.Option(1, "--per-modality", min=1, help="cases shown per modality"),
) -> None:
    """Write a PNG contact sheet: one case per modality, image beside labels and boxes."""
    from .manifest import ManifestError, load_manifest
    from .preview import preview_manifest

    manifest_path = source / "manifest.json" if source.is_dir() else source
    root = data or manifest_path.parent
    try:
        m = load_manifest(manifest_path, data_root=root, verify=True)
        preview_manifest(m, root, out, per_modality=per_modality)
    except ManifestError as exc:
        _fail(str(exc))
    typer.echo(f"contact sheet of {len(m.modalities())} modalities → {out}")


@app.command()
def verify(
    manifest: Path = typer.Argument(..., help="manifest file"),
    data: Path = typer.Option(..., "--data", help="data root the manifest's paths are relative to"),
) -> None:
    """Check the manifest's schema and every file's SHA-256."""
    from .manifest import ManifestError, load_manifest

    try:
        m = load_manifest(manifest, data_root=data, verify=True)
    except ManifestError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"id": m.id, "version": m.version, "cases": len(m.cases), "ok": True}))


@app.command()
def migrate(
    manifest: Path = typer.Argument(..., help="manifest file (schema version 1 or later)"),
    data: Path | None = typer.Option(None, "--data", help="data root (default: the manifest's folder)"),
    out: Path | None = typer.Option(None, "--out", help="write the upgraded manifest here (default: in place)"),
) -> None:
    """Upgrade a manifest to the current schema version (2: point prompts computed from the ground truth)."""
    from .manifest import ManifestError
    from .migrate import migrate_manifest

    try:
        m = migrate_manifest(manifest, data_root=data, out=out)
    except ManifestError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"id": m.id, "schema_version": m.schema_version, "cases": len(m.cases),
                           "out": str(out or manifest)}))


def main() -> None:  # pragma: no cover - console entry for `python -m data_manifests.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
