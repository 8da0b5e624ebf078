"""The rollout gates without a server: gates files, golden folders, warmup records, metrics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from client.canary.agreement import BoxLabel
from client.canary.comparisons import COMPARISONS
from serving.rollout import gates as g
from serving.rollout import golden, metrics
from serving.rollout.scores import Scores


def test_the_shipped_gates_file_names_known_measures_only(tmp_path):
    gates = g.load_gates(None)
    assert gates.source == "defaults"
    assert set(gates.service) == set(g.SERVICE_KEYS)
    for kind, families in gates.models.items():
        for family, thresholds in families.items():
            assert set(thresholds) <= set(COMPARISONS[kind].measures[family]), (kind, family)
    # Re-reading the defaults as a user file checks them with the user-file rules too.
    copy = tmp_path / "gates.toml"
    copy.write_text(g.DEFAULTS.read_text())
    assert g.load_gates(copy).models == gates.models
    assert g.threshold(gates, "unet", "agreement", "dice") == 0.97
    assert g.threshold(gates, "generator", "agreement", "judge_agreement") is None


def test_a_gates_file_overrides_key_by_key(tmp_path):
    path = tmp_path / "gates.toml"
    path.write_text(
        "[service]\np99_ratio = 3\n[unet.agreement]\ndice = 0.9\n[unet.truth]\ndice = false\n"
    )
    gates = g.load_gates(path)
    assert gates.service["p99_ratio"] == 3.0 and gates.service["p50_ratio"] == 1.5
    assert g.threshold(gates, "unet", "agreement", "dice") == 0.9
    assert g.threshold(gates, "unet", "truth", "dice") is None
    assert g.threshold(gates, "localizer", "agreement", "box_iou") == 0.85


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[unet.agreement]\ndise = 0.9\n", "[unet.agreement]: unknown key 'dise'; valid: dice"),
        ("[resnet.agreement]\nx = 1\n", "unknown table [resnet]; valid: service, unet, local"),
        ("[unet.quality]\nx = 1\n", "[unet]: unknown key 'quality'; valid: agreement, truth"),
        ("[service]\np50_ratio = -1\n", "[service] p50_ratio = -1: expected a number >= 0"),
        ("[service]\nerror_rate = false\n", "error_rate = False: expected a number >= 0"),
        ("[service\n", "is not TOML"),
    ],
)
def test_gates_file_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(g.GatesError) as caught:
        g.load_gates(path)
    assert message in str(caught.value)


def scores(**changes) -> Scores:
    base = dict(
        agreement={"dice": 0.99},
        truth={"stable": {"dice": 0.95}, "canary": {"dice": 0.94}},
        quality={},
        latency_ms={"stable": {"p50": 10.0, "p99": 20.0}, "canary": {"p50": 11.0, "p99": 22.0}},
        requests={"stable": 100, "canary": 100},
        failures={"stable": 0, "canary": 0},
        server={"requests": 200, "errors": 0},
    )
    return Scores(**{**base, **changes})


def outcome(rows) -> dict[str, bool | None]:
    return {row.gate: row.passed for row in rows}


def test_rows_pass_and_fail_on_their_thresholds():
    gates = g.load_gates(None)
    assert all(outcome(g.evaluate(scores(), gates, "unet")).values())
    rows = outcome(
        g.evaluate(
            scores(
                agreement={"dice": 0.96},
                truth={"stable": {"dice": 0.95}, "canary": {"dice": 0.92}},
                latency_ms={
                    "stable": {"p50": 10.0, "p99": 20.0},
                    "canary": {"p50": 20.1, "p99": 45.1},
                },
                failures={"stable": 0, "canary": 2},
                server={"requests": 100, "errors": 2},
            ),
            gates,
            "unet",
        )
    )
    assert rows == {
        "agreement dice": False,
        "truth dice": False,
        "latency p50 (ms)": False,  # 20.1 > 1.5 * 10 + 5
        "latency p99 (ms)": False,  # 45.1 > 2 * 20 + 5
        "errors, canary golden": False,
        "errors, server": False,
    }
    # No monitoring: the server row is reported, not gated; unreadable monitoring fails.
    assert outcome(g.evaluate(scores(server=None), gates, "unet"))["errors, server"] is None
    failed = scores(server=None, server_failed=True, server_note="cannot read metrics")
    assert outcome(g.evaluate(failed, gates, "unet"))["errors, server"] is False
    # No ground truth: reported, not gated.
    assert outcome(g.evaluate(scores(truth={}), gates, "unet"))["truth dice"] is None


def test_generator_rows_gate_the_judge_and_report_agreement():
    rows = g.evaluate(
        scores(
            agreement={"judge_agreement": 0.3, "pixel_agreement": 0.7},
            truth={},
            quality={
                "stable": {"judge_confidence": 0.80, "recognizability": 0.4},
                "canary": {"judge_confidence": 0.70, "recognizability": 0.2},
            },
        ),
        g.load_gates(None),
        "generator",
    )
    assert outcome(rows) == {
        "agreement judge_agreement": None,
        "agreement pixel_agreement": None,
        "quality judge_confidence": False,  # 0.70 < 0.80 - 0.05
        "quality recognizability": None,
        "latency p50 (ms)": True,
        "latency p99 (ms)": True,
        "errors, canary golden": True,
        "errors, server": True,
    }


def test_shadow_rows():
    summary = {"calls": 10, "errors": 0, "mean": {"dice": 0.9}, "min": {"dice": 0.5}}
    rows = outcome(g.evaluate(scores(shadow=summary), g.load_gates(None), "unet"))
    assert rows["shadow dice"] is False and rows["shadow errors"] is True
    none = {"calls": 0, "errors": 0, "mean": {}, "min": {}}
    rows = outcome(g.evaluate(scores(shadow=none), g.load_gates(None), "unet"))
    assert rows["shadow dice"] is None and rows["shadow errors"] is None


def test_the_built_in_golden_sets_load():
    for kind, compare in COMPARISONS.items():
        items = golden.load_folder(golden.built_in_folder(kind), compare).items
        assert items, kind
    cars = golden.load_folder(golden.built_in_folder("unet"), COMPARISONS["unet"]).items
    assert len(cars) == 8 and all(item.truth.shape == item.value.shape[:2] for item in cars)
    objects = golden.load_folder(golden.built_in_folder("localizer"), COMPARISONS["localizer"])
    assert len(objects.items) == 12 and isinstance(objects.items[0].truth, BoxLabel)
    seeds = golden.load_folder(golden.built_in_folder("generator"), COMPARISONS["generator"])
    assert len(seeds.items) == 256 and all(isinstance(item.value, int) for item in seeds.items)


def test_a_user_golden_folder(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "b.jpg")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "masks" / "a.png")
    items = golden.load_folder(tmp_path, COMPARISONS["unet"]).items
    assert [i.name for i in items] == ["a.png", "b.jpg"]
    assert items[0].truth.all() and items[1].truth is None
    # Without labels.csv a localizer set has no truth; with it, the CSV lists the images.
    assert golden.load_folder(tmp_path, COMPARISONS["localizer"]).items[0].truth is None
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([golden.CSV_COLUMNS, ["b.jpg", "ellipse", 2, 3, 12, 13]])
    items = golden.load_folder(tmp_path, COMPARISONS["localizer"]).items
    assert [(i.name, i.truth) for i in items] == [("b.jpg", BoxLabel("ellipse", (2, 3, 11, 12)))]
    (tmp_path / "seeds.json").write_text(json.dumps([5, 6]))
    assert [i.value for i in golden.load_folder(tmp_path, COMPARISONS["generator"]).items] == [
        5,
        6,
    ]


@pytest.mark.parametrize(
    ("setup", "kind", "message"),
    [
        (lambda p: None, "unet", "holds no images"),
        (lambda p: (p / "seeds.json").write_text('{"seeds": [1.5]}'), "generator", "must hold"),
        (lambda p: (p / "x.png").write_bytes(b"not a png"), "unet", "x.png cannot be read"),
        (
            lambda p: (p / "labels.csv").write_text("path,class\n"),
            "localizer",
            "lacks columns ['x_min', 'y_min', 'x_max', 'y_max']",
        ),
    ],
)
def test_golden_folder_mistakes_are_named(tmp_path, setup, kind, message):
    setup(tmp_path)
    with pytest.raises(golden.GoldenError, match=message.replace("[", r"\[")):
        golden.load_folder(tmp_path, COMPARISONS[kind])
    with pytest.raises(golden.GoldenError, match="does not exist"):
        golden.load_folder(tmp_path / "nowhere", COMPARISONS[kind])


def test_warmup_requests_become_golden_items(tmp_path):
    from client.images.preprocess import prepare_image
    from common.contract import generator_contract, unet_contract
    from export.warmup import write_warmup

    contract = unet_contract(16)
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    png = tmp_path / "i.png"
    Image.fromarray(image).save(png)
    write_warmup(
        tmp_path / "1",
        "unet",
        {
            "serving_default": {"image": prepare_image(image, contract.preprocessing)[None]},
            "serve_bytes": {"image_bytes": np.array([png.read_bytes()], dtype=object)},
        },
    )
    items = golden.warmup_items(tmp_path / "1", COMPARISONS["unet"], contract)
    assert [i.name for i in items] == [
        "warmup serving_default.image #0.0",
        "warmup serve_bytes.image_bytes #1.0",
    ]
    for item in items:
        np.testing.assert_array_equal(item.value, image)
    z = np.ones((2, 8), np.float32)
    write_warmup(
        tmp_path / "2",
        "generator",
        {"serving_default": {"z": z}, "serve_seeds": {"seeds": np.array([3, 4])}},
    )
    items = golden.warmup_items(tmp_path / "2", COMPARISONS["generator"], generator_contract(8))
    assert [i.value for i in items[2:]] == [3, 4] and items[0].value.shape == (8,)
    assert golden.warmup_items(tmp_path / "none", COMPARISONS["unet"], contract) == []


PROMETHEUS = """\
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="unet",status="OK"} 12
:tensorflow:serving:request_count{model_name="unet",status="INVALID_ARGUMENT"} 2
:tensorflow:serving:request_count{model_name="other",status="OK"} 99
:tensorflow:serving:request_latency_count{model_name="unet",API="Predict",entrypoint="GRPC"} 9
"""


def test_request_counts_over_a_window(tmp_path):
    before = metrics.request_counts(PROMETHEUS, "unet")
    assert before == {"OK": 12.0, "INVALID_ARGUMENT": 2.0}
    after = {"OK": 40.0, "INVALID_ARGUMENT": 3.0, "NOT_FOUND": 1.0}
    assert metrics.window(before, after) == {"requests": 30, "errors": 2}
    with pytest.raises(metrics.MetricsError, match="the server restarted"):
        metrics.window(after, before)
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/m" }\n')
    assert metrics.metrics_url("10.0.0.1:8500", 8501, str(config), None) == "http://10.0.0.1:8501/m"
    config.write_text("prometheus_config { enable: false }\n")
    with pytest.raises(metrics.MetricsError, match="does not enable prometheus_config"):
        metrics.metrics_url("h:1", 2, str(config), None)
