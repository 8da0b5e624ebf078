"""export/served.py: `make serve` replaces a newest version that TF Serving could not run."""

import json

import pytest
import tensorflow as tf

from export.check import sample_requests
from export.models import export_module
from export.publish import export_run
from export.served import main
from export.warmup import write_warmup
from training.runner import load_run


@pytest.fixture()
def runs(tiny_runs, tmp_path):
    """A shipped-runs-like folder: one run folder a model."""
    folder = tmp_path / "runs"
    folder.mkdir()
    for model, run in tiny_runs.items():
        (folder / model).symlink_to(run)
    return folder


def _write_object_graph_only_version(run, version_dir):
    # What export wrote before it tracked Keras 3's variables: TF Serving loads it, then every
    # warmup record fails with "Could not find variable ...".
    task, config, model = load_run(run)
    contract = task.contract(config)
    module = tf.Module()
    module.model = model
    signatures = export_module("generator").signatures(module, contract)
    tf.saved_model.save(module, str(version_dir), signatures=signatures)
    write_warmup(version_dir, "generator", sample_requests("generator", config, contract))


def test_an_old_version_is_replaced_with_one_line_saying_why(runs, tmp_path, capsys):
    base = tmp_path / "models"
    _write_object_graph_only_version(runs / "generator", base / "generator" / "1")
    assert main(["--runs", str(runs), "--base-path", str(base), "generator"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(base / "generator" / "2")]
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{base / 'generator' / '1'} would not serve under TF Serving")
    assert "is not restored by the MetaGraph's restore op" in lines[0]
    assert f"exporting a new version from {runs / 'generator'}" in lines[0]
    assert sorted(p.name for p in (base / "generator").iterdir()) == ["1", "2"]


def test_a_servable_version_is_kept_and_a_missing_one_exported(runs, tmp_path, capsys):
    base = tmp_path / "models"
    export_run("generator", runs / "generator", base)
    assert main(["--runs", str(runs), "--base-path", str(base), "generator", "localizer"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(base / "localizer" / "1")]
    assert err == ""
    assert [p.name for p in (base / "generator").iterdir()] == ["1"]


def test_a_version_under_an_older_contract_is_replaced(runs, tmp_path, capsys):
    # A version exported before the contract bounded JPEG scans checks pixels per request in
    # its graph, so batch-mates could fail each other: it is exported again.
    base = tmp_path / "models"
    old = export_run("generator", runs / "generator", base)
    export_run("localizer", runs / "localizer", base)
    manifest = old / "assets.extra" / "manifest.json"
    stated = json.loads(manifest.read_text())
    assert stated["contract"]["preprocessing"] is None  # the generator takes no images
    localizer = base / "localizer" / "1" / "assets.extra" / "manifest.json"
    stated = json.loads(localizer.read_text())
    del stated["contract"]["preprocessing"]["max_jpeg_scans"]
    localizer.write_text(json.dumps(stated))
    assert main(["--runs", str(runs), "--base-path", str(base), "generator", "localizer"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(base / "localizer" / "2")]
    assert err.strip().splitlines() == [
        f"{base / 'localizer' / '1'} is out of date (its manifest's pre-processing has no "
        f"max_jpeg_scans: an older contract); exporting a new version from {runs / 'localizer'}"
    ]
    assert [p.name for p in (base / "generator").iterdir()] == ["1"]


def test_a_version_decoding_jpegs_by_another_margin_is_replaced(runs, tmp_path, capsys):
    # Its graph would decode a REST call's JPEG at another DCT scale than the client's gRPC
    # input: one rule for training, the graph and the client, so it is exported again.
    base = tmp_path / "models"
    export_run("unet", runs / "unet", base)
    manifest = base / "unet" / "1" / "assets.extra" / "manifest.json"
    stated = json.loads(manifest.read_text())
    margin = stated["contract"]["preprocessing"]["jpeg_margin"]
    stated["contract"]["preprocessing"]["jpeg_margin"] = margin + 1.0
    manifest.write_text(json.dumps(stated))
    assert main(["--runs", str(runs), "--base-path", str(base), "unet"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(base / "unet" / "2")]
    assert err.strip().splitlines() == [
        f"{base / 'unet' / '1'} is out of date (its graph decodes JPEGs by jpeg_margin "
        f"{margin + 1.0}, the contract's is {margin}); exporting a new version from "
        f"{runs / 'unet'}"
    ]
    written = json.loads((base / "unet" / "2" / "assets.extra" / "manifest.json").read_text())
    assert written["contract"]["preprocessing"]["jpeg_margin"] == margin


def test_usage_error_is_one_line(capsys):
    assert main(["--base-path", "x", "nope"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
