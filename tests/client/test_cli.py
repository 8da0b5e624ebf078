"""`python -m client`: pictures, per-image error isolation, exit statuses, and a real server."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from client import cli
from client.images.pictures import color_instances, draw_box, overlay_mask, sample_grid
from common.contract import DEFAULT_CLASS_NAMES
from tests.support import ROOT, TINY_SERVER, free_port
from training.data.cars import render_car

integration = pytest.mark.integration
# The CLI-against-a-server tests call the shared `tiny_server`.
pytestmark = pytest.mark.xdist_group(TINY_SERVER)
ORANGE = (255, 64, 0)


def run(capsys, *argv) -> tuple[int, list[str], list[str]]:
    """Runs the CLI in-process; returns (exit status, stdout lines, stderr lines)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def records(lines: list[str]) -> dict[str, dict]:
    return {r["image"]: r for r in map(json.loads, lines)}


def colours(picture: Image.Image) -> set[tuple[int, ...]]:
    return {tuple(c) for c in np.asarray(picture).reshape(-1, len(picture.getbands()))}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A colour car PNG, a grayscale one of another size, a corrupt file and the coins photo."""
    root = tmp_path_factory.mktemp("pictures")
    car, _ = render_car(3, view=0, height=48, width=72)
    other, _ = render_car(5, view=1, height=40, width=64)
    paths = {
        "car": root / "car.png",
        "gray": root / "gray.png",
        "corrupt": root / "corrupt.png",
        "coins": root / "coins.png",
        "missing": root / "missing.png",
    }
    Image.fromarray(car).save(paths["car"])
    Image.fromarray(other).convert("L").save(paths["gray"])
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    Image.fromarray(skdata.coins()).save(paths["coins"])
    return paths


# -- pictures ----------------------------------------------------------------------------------


def test_picture_morphology_equals_scipy_and_scikit_image():
    """Pictures use NumPy alone (the slim client); they draw what SciPy/skimage would."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    from client.images.pictures import erode, inner_boundaries

    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = ndimage.binary_opening(rng.random((40, 50)) > 0.3)
        for iterations in (1, 3):
            np.testing.assert_array_equal(
                erode(mask, iterations), ndimage.binary_erosion(mask, iterations=iterations)
            )
        labels, _ = ndimage.label(rng.random((40, 50)) > 0.5)
        expected = find_boundaries(labels, mode="inner") & (labels > 0)
        np.testing.assert_array_equal(inner_boundaries(labels), expected)


def test_overlay_mask_tints_inside_outlines_and_keeps_size():
    image = np.full((40, 60), 100, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 15:45] = True
    picture = overlay_mask(image, mask, color=ORANGE)
    assert picture.size == (60, 40) and picture.mode == "RGB"
    pixels = np.asarray(picture)
    assert tuple(pixels[10, 15]) == ORANGE  # the outline is solid
    assert tuple(pixels[0, 0]) == (100, 100, 100)  # outside untouched
    inside = pixels[20, 30].astype(int)
    assert inside[0] > 100 > inside[2]  # tinted toward orange
    with pytest.raises(ValueError, match="mask has shape"):
        overlay_mask(image, mask[:-1])


def test_color_instances_gives_each_instance_its_own_colour():
    image = np.zeros((40, 60, 3), np.uint8)
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:15], labels[20:35, 20:50] = 1, 2
    picture = color_instances(image, labels)
    pixels = np.asarray(picture)
    assert picture.size == (60, 40)
    assert tuple(pixels[10, 10]) != tuple(pixels[27, 35])
    assert tuple(pixels[5, 5]) == (255, 255, 255)  # boundary
    assert tuple(pixels[0, 0]) == (0, 0, 0)  # background untouched
    assert len(colours(picture)) == 4  # black, white and two instance tints


def test_draw_box_enlarges_small_images_and_draws_rectangle_and_label():
    image = np.zeros((32, 32, 3), np.uint8)
    picture = draw_box(image, (4, 8, 19, 27), "ellipse 0.97", color=ORANGE)
    assert picture.size == (256, 256)  # enlarged 8x so that the label is legible
    pixels = np.asarray(picture)
    assert tuple(pixels[8 * 20 - 1, 8 * 4]) == ORANGE  # left edge, below the tab
    assert tuple(pixels[8 * 28 - 1, 8 * 10]) == ORANGE  # bottom edge (inclusive corner)
    assert (255, 255, 255) in colours(picture)  # the label's text on the orange tab
    assert draw_box(np.zeros((300, 400), np.uint8), (0, 0, 10, 10), "").size == (400, 300)


def test_sample_grid_sizes_and_modes():
    gray = np.arange(6 * 8 * 8, dtype=np.uint8).reshape(6, 8, 8, 1)
    grid = sample_grid(gray, scale=3)
    assert grid.mode == "L" and grid.size == (3 * 8 * 3, 2 * 8 * 3)
    np.testing.assert_array_equal(np.asarray(grid)[24:48:3, 0:24:3], gray[3, ..., 0])
    rgb = sample_grid(np.full((5, 4, 6, 3), 200, np.uint8), cols=5, scale=2)
    assert rgb.mode == "RGB" and rgb.size == (5 * 6 * 2, 4 * 2)
    with pytest.raises(ValueError, match="uint8"):
        sample_grid(np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="N >= 1"):
        sample_grid(np.zeros((0, 4, 4, 1), np.uint8))


# -- CLI without a model ---------------------------------------------------------------------


# Each usage error: exit 2, nothing on stdout, and exactly one stderr line that names the
# sub-command, the option and the bad value (no usage block, no traceback); `*` stands for
# argparse's list of choices.
USAGE_ERRORS = [
    (
        ["segment"],
        "python -m client segment: error: the following arguments are required: IMAGE",
    ),
    (
        ["segment", "x.png", "--jobs", "0"],
        "python -m client segment: error: argument --jobs: 0 must be a finite number greater "
        "than 0",
    ),
    (
        ["segment", "x.png", "--jobs", "x"],
        "python -m client segment: error: argument --jobs: 'x' is not a number",
    ),
    (
        ["segment", "x.png", "--model-version", "1", "--version-label", "stable"],
        "python -m client segment: error: argument --version-label: not allowed with argument "
        "--model-version",
    ),
    (
        ["localize", "x.png", "--server", "h:1", "--rest", "h:2"],
        "python -m client localize: error: argument --rest: not allowed with argument --server",
    ),
    (
        ["segment", "x.png", "--method", "magic"],
        "python -m client segment: error: argument --method: invalid choice: 'magic' *",
    ),
    (
        ["status", "unet", "--timeout", "inf"],
        "python -m client status: error: argument --timeout: inf must be a finite number "
        "greater than 0",
    ),
    (
        ["status", "unet", "--max-response-mib", "nan"],
        "python -m client status: error: argument --max-response-mib: nan must be a finite "
        "number greater than 0",
    ),
    (
        ["status", "unet", "--max-response-mib", "0"],
        "python -m client status: error: argument --max-response-mib: 0 must be a finite number "
        "greater than 0",
    ),
    (
        ["generate", "--out", "g.png"],
        "python -m client generate: error: the following arguments are required: --n",
    ),
    (
        ["generate", "--n", "0", "--out", "g.png"],
        "python -m client generate: error: argument --n: 0 must be a finite number greater than 0",
    ),
    (
        ["segment", "x.png", "--bogus"],
        "python -m client: error: unrecognized arguments: --bogus",
    ),
    (
        ["frobnicate"],
        "python -m client: error: argument COMMAND: invalid choice: 'frobnicate' *",
    ),
]


@pytest.mark.parametrize(("argv", "line"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_one_line_naming_the_option(
    capsys, monkeypatch, tmp_path, argv, line
):
    monkeypatch.chdir(tmp_path)  # so that a relative --out would be written here
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == []
    assert len(err) == 1, err
    assert fnmatch.fnmatchcase(err[0], f"{line} (see --help)"), err[0]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_url_that_cannot_be_used_is_a_usage_error(capsys):
    code, out, err = run(capsys, "status", "unet", "--rest", "ftp://host:1")
    assert (code, out) == (2, [])
    assert err == [
        "python -m client: error: expected an http:// or https:// URL, not 'ftp://host:1'"
    ]


def test_help_exits_0_with_the_subcommand_usage_on_stdout(capsys):
    code, out, err = run(capsys, "segment", "--help")
    assert (code, err) == (0, [])
    assert out[0].startswith("usage: python -m client segment ")
    assert any("--fallback {auto,never,only}" in line for line in out)


def test_watershed_fallback_counts_coins_without_a_server(capsys, pictures, tmp_path):
    port = free_port()  # nothing listens: "only" must not need the server at all
    code, out, err = run(
        capsys,
        "segment",
        pictures["coins"],
        "--fallback",
        "only",
        "--method",
        "watershed",
        "--json",
        "--out",
        tmp_path,
        "--server",
        f"127.0.0.1:{port}",
    )
    assert code == 0, err
    (record,) = records(out).values()
    assert record["source"] == "fallback:watershed"
    assert record["instances"] >= 15
    assert (record["height"], record["width"]) == skdata.coins().shape
    with Image.open(record["instances_png"]) as ids, Image.open(record["mask_png"]) as mask:
        assert ids.size == mask.size == (384, 303)
        assert ids.mode.startswith("I;16") and mask.mode == "L"
        labels = np.asarray(ids)
        assert np.unique(labels[labels > 0]).size == record["instances"]
        # The mask is exactly the labelled pixels, 0 or 255.
        np.testing.assert_array_equal(np.asarray(mask), np.where(labels > 0, 255, 0))
    assert Image.open(record["instances_overlay_png"]).mode == "RGB"
    assert Image.open(record["overlay_png"]).size == (384, 303)


def test_server_down_falls_back_or_exits_3(capsys, pictures, tmp_path):
    server = f"127.0.0.1:{free_port()}"
    code, out, err = run(
        capsys, "segment", pictures["car"], "--json", "--server", server, "--timeout", "5"
    )
    assert code == 0, err
    assert records(out)[str(pictures["car"])]["source"] == "fallback:otsu"

    code, out, err = run(
        capsys,
        "segment",
        pictures["car"],
        pictures["gray"],
        "--fallback",
        "never",
        "--server",
        server,
        "--timeout",
        "5",
    )
    assert code == 3 and not out
    assert len(err) == 1 and "UNAVAILABLE" in err[0]

    code, out, err = run(capsys, "status", "unet", "--server", server, "--timeout", "5")
    assert code == 3 and len(err) == 1 and "UNAVAILABLE" in err[0]


def test_unique_stems():
    assert cli.unique_stems(["a/x.png", "b/x.jpg", "y.png", "x"]) == ["x", "x-2", "y", "x-3"]
    # A disambiguated name never takes another input's own stem, whatever the order.
    assert cli.unique_stems(["a/x.png", "b/x.png", "x-2.png"]) == ["x", "x-3", "x-2"]
    assert cli.unique_stems(["x-2.png", "a/x.png", "b/x.png"]) == ["x-2", "x", "x-3"]
    # Names differing only in case are one file on macOS and Windows.
    assert cli.unique_stems(["a/X.png", "b/x.png"]) == ["X", "x-2"]


def test_inputs_with_one_name_get_their_own_pictures(capsys, tmp_path):
    """a/x.png, b/x.png and x-2.png: each input's pictures survive under their own names."""
    sizes = {"a/x.png": (24, 40), "b/x.png": (32, 48), "x-2.png": (40, 56)}
    for name, (height, width) in sizes.items():
        image = np.zeros((height, width, 3), np.uint8)
        image[height // 4 : -height // 4, width // 4 : -width // 4] = 220
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / name)
    paths = [tmp_path / name for name in sizes]
    out = tmp_path / "out"
    code, lines, err = run(
        capsys, "segment", *paths, "--fallback", "only", "--out", out, "--json", "--jobs", "3"
    )
    assert code == 0, err
    by_input = records(lines)
    written = [by_input[str(path)]["mask_png"] for path in paths]
    assert len(set(written)) == 3, written
    assert sorted(p.name for p in out.glob("*.mask.png")) == [
        "x-2.mask.png",
        "x-3.mask.png",
        "x.mask.png",
    ]
    for path, (height, width) in zip(paths, sizes.values(), strict=True):
        with Image.open(by_input[str(path)]["mask_png"]) as mask:
            assert mask.size == (width, height), path


def test_module_entry_point_exits_2_with_the_error_line():
    """`python -m client` itself (not only `cli.main`): the status and the line reach the shell."""
    done = subprocess.run(
        [sys.executable, "-m", "client", "segment", "--jobs", "x", "a.png"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "python -m client segment: error: argument --jobs: 'x' is not a number (see --help)\n"
    )


# -- CLI against the real server -------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_server):
    """The tiny runs of the three models served as `make serve` does (`tests/conftest.py`)."""
    return tiny_server[0]


@integration
def test_segment_json_and_pictures(capsys, served, pictures, tmp_path):
    code, out, err = run(
        capsys,
        "segment",
        pictures["car"],
        pictures["gray"],
        "--json",
        "--fallback",
        "never",
        "--out",
        tmp_path,
        "--server",
        f"127.0.0.1:{served.port}",
    )
    assert code == 0, err
    got = records(out)
    assert len(out) == 2 and set(got) == {str(pictures["car"]), str(pictures["gray"])}
    for name, size in (("car", (48, 72)), ("gray", (40, 64))):
        record = got[str(pictures[name])]
        assert record["source"] == "model:unet/1"
        assert (record["height"], record["width"]) == size
        assert 0.0 <= record["foreground_fraction"] <= 1.0 and record["instances"] is None
        assert record["mask_png"] == str(tmp_path / f"{name}.mask.png")
        with Image.open(record["mask_png"]) as mask:
            assert (mask.size, mask.mode) == (size[::-1], "L")
            assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
            fraction = float(np.mean(np.asarray(mask) == 255))
        assert fraction == pytest.approx(record["foreground_fraction"], abs=1e-6)
        assert record["overlay_png"] == str(tmp_path / f"{name}.overlay.png")
        assert Image.open(record["overlay_png"]).mode == "RGB"
        assert record["instances_png"] is None and record["instances_overlay_png"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "car.mask.png",
        "car.overlay.png",
        "gray.mask.png",
        "gray.overlay.png",
    ]

    # The same call over REST answers from the same model.
    code, out, err = run(
        capsys,
        "segment",
        pictures["car"],
        "--rest",
        f"127.0.0.1:{served.rest_port}",
        "--fallback",
        "never",
    )
    assert code == 0, err
    fraction = got[str(pictures["car"])]["foreground_fraction"]
    assert out == [f"{pictures['car']}: {fraction:.1%} foreground, 72x48, model:unet/1"]


@integration
def test_bad_images_are_reported_once_each_and_the_rest_done(capsys, served, pictures, tmp_path):
    paths = [pictures[n] for n in ("car", "missing", "corrupt", "gray")]
    code, out, err = run(
        capsys,
        "segment",
        *paths,
        "--jobs",
        "3",
        "--json",
        "--out",
        tmp_path,
        "--server",
        f"127.0.0.1:{served.port}",
    )
    assert code == 1
    assert set(records(out)) == {str(pictures["car"]), str(pictures["gray"])}
    assert sorted(err) == sorted(
        [
            f"{pictures['missing']}: cannot read image: no such file",
            f"{pictures['corrupt']}: cannot read image: "
            "not an image format Pillow can decode (corrupt?)",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "car.mask.png",
        "car.overlay.png",
        "gray.mask.png",
        "gray.overlay.png",
    ]


@integration
def test_localize_writes_boxes(capsys, served, pictures, tmp_path):
    code, out, err = run(
        capsys,
        "localize",
        pictures["car"],
        pictures["gray"],
        "--out",
        tmp_path,
        "--json",
        "--server",
        f"127.0.0.1:{served.port}",
    )
    assert code == 0, err
    for name in ("car", "gray"):
        record = records(out)[str(pictures[name])]
        assert record["source"] == "model:localizer/1"
        assert record["class"] in DEFAULT_CLASS_NAMES and 0.0 <= record["score"] <= 1.0
        x0, y0, x1, y1 = record["box"]
        assert 0 <= x0 <= x1 < record["width"] and 0 <= y0 <= y1 < record["height"]
        assert record["boxes_png"] == str(tmp_path / f"{name}.boxes.png")
        assert Image.open(record["boxes_png"]).mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["car.boxes.png", "gray.boxes.png"]
    # Without --json: one line per image saying the same.
    record = records(out)[str(pictures["car"])]
    code, out, err = run(
        capsys, "localize", pictures["car"], "--server", f"127.0.0.1:{served.port}"
    )
    assert code == 0, err
    box = "({}, {})-({}, {})".format(*record["box"])
    assert out == [
        f"{pictures['car']}: {record['class']} {record['score']:.2f} at {box}, model:localizer/1"
    ]


@integration
def test_generate_grid_from_seeds(capsys, served, tmp_path):
    server = f"127.0.0.1:{served.port}"
    grids = []
    for name in ("a.png", "b.png"):
        code, out, err = run(
            capsys,
            "generate",
            "--n",
            "6",
            "--seed",
            "3",
            "--out",
            tmp_path / name,
            "--json",
            "--server",
            server,
        )
        assert code == 0, err
        (line,) = out
        assert json.loads(line) == {
            "out": str(tmp_path / name),
            "source": "model:generator/1",
            "count": 6,
            "seeds": [3, 4, 5, 6, 7, 8],
            "height": 28,
            "width": 28,
        }
        grid = Image.open(tmp_path / name)
        # 6 tiles of 28x28 in 3 columns and 2 rows, enlarged 4x.
        assert grid.size == (3 * 28 * 4, 2 * 28 * 4) and grid.mode == "L"
        grids.append(np.asarray(grid))
    np.testing.assert_array_equal(*grids)  # seeds are reproducible
    code, out, err = run(
        capsys, "generate", "--n", "4", "--out", tmp_path / "r.png", "--server", server
    )
    assert code == 0, err
    assert out == [f"{tmp_path / 'r.png'}: 4 images 28x28, random latents, model:generator/1"]
    assert Image.open(tmp_path / "r.png").size == (2 * 28 * 4, 2 * 28 * 4)


@integration
def test_status_and_metadata_print_json(capsys, served):
    server = f"127.0.0.1:{served.port}"
    code, out, err = run(capsys, "status", "unet", "--server", server)
    assert code == 0, err
    assert json.loads("\n".join(out))[0]["version"] == 1
    assert json.loads("\n".join(out))[0]["state"] == "AVAILABLE"
    code, out, err = run(capsys, "metadata", "generator", "--server", server)
    assert code == 0, err
    metadata = json.loads("\n".join(out))
    assert metadata["name"] == "generator" and "serve_seeds" in metadata["signatures"]
    code, out, err = run(capsys, "status", "nosuchmodel", "--server", server)
    assert code == 3 and len(err) == 1 and "NOT_FOUND" in err[0]


@integration
def test_demo_runs_end_to_end_on_its_shipped_inputs(capsys, served, tmp_path):
    """`make demo`: every step passes on the shipped inputs and writes its pictures."""
    from client import demo

    assert demo.main(["--out", str(tmp_path), "--server", f"127.0.0.1:{served.port}"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "demo"
    assert sorted(p.name for p in (root / "inputs").iterdir()) == sorted(
        [p.name for p in demo.INPUTS.iterdir()] + ["coins.png"]
    )
    assert (root / "generated.png").is_file() and (root / "status.json").is_file()
    for step in ("segment", "localize", "coins"):
        assert any((root / step).iterdir()), step
    assert "steps failed" not in out
