"""The rollout gates' shipped golden sets are exactly what their generator makes."""

import numpy as np
from PIL import Image

from common.contract import DEFAULT_CLASS_NAMES
from serving.rollout.golden import BUILT_IN
from training.data.golden_sets import write_golden_sets
from training.data.shapes import load_annotations_csv


def test_shipped_golden_sets_match_their_generator(tmp_path):
    written = write_golden_sets(tmp_path)
    made = sorted(str(p.relative_to(tmp_path)) for p in written)
    shipped = sorted(str(p.relative_to(BUILT_IN)) for p in BUILT_IN.rglob("*") if p.is_file())
    assert made == shipped
    for path in written:
        name = path.relative_to(tmp_path)
        if path.suffix in (".csv", ".json"):
            assert path.read_text() == (BUILT_IN / name).read_text(), name
            continue
        with Image.open(path) as new, Image.open(BUILT_IN / name) as kept:
            np.testing.assert_array_equal(np.asarray(new), np.asarray(kept), err_msg=str(name))
    total = sum(p.stat().st_size for p in BUILT_IN.rglob("*") if p.is_file())
    assert total < 300_000, f"the golden sets grew to {total} bytes"


def test_the_labels_read_as_the_training_csv_loader_reads_them():
    images, class_ids, boxes = load_annotations_csv(
        BUILT_IN / "localizer" / "labels.csv", DEFAULT_CLASS_NAMES
    )
    assert len(images) == 12 and len(set(class_ids.tolist())) == 3
    assert boxes.shape == (12, 4) and (boxes > 0).all()
