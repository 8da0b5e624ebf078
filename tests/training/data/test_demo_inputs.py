"""The client demo's shipped input pictures are exactly what their generator makes."""

import numpy as np
from PIL import Image

from client.demo import INPUTS
from tests.support import ROOT
from training.data.demo_inputs import write_demo_inputs


def test_shipped_demo_inputs_match_their_generator(tmp_path):
    written = write_demo_inputs(tmp_path)
    shipped = sorted(p.name for p in INPUTS.iterdir())
    assert sorted(p.name for p in written) == shipped
    assert INPUTS == ROOT / "client" / "demo_inputs"
    for path in written:
        with Image.open(path) as made, Image.open(INPUTS / path.name) as kept:
            np.testing.assert_array_equal(np.asarray(made), np.asarray(kept), err_msg=path.name)
            assert made.getexif() == kept.getexif()
