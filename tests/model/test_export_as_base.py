"""An export is a starting model: `model.encoder.model: <export folder>` trains on from the exported
weights (continued training, e.g. on negatives that model mined), embedding exactly as the export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mme5.model.encoder import Encoder, EncoderSettings
from mme5.model.export import export
from mme5.records import Side


@pytest.mark.parametrize("name", ["tiny-mllama", "tiny-llava"])
def test_an_export_loads_as_the_encoder_it_was(tmp_path, name):
    torch.manual_seed(0)
    trained = Encoder(EncoderSettings(name, max_length=32))
    with torch.no_grad():  # weights no longer those of the twin's seed
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = export(trained, tmp_path / "export")
    again = Encoder(EncoderSettings(str(folder), max_length=32))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8))
    sides = [Side("a red circle"), Side("<|image_1|> what is shown?", image), Side(None, image)]
    trained.eval(), again.eval()
    want, got = trained.encode_sides(sides), again.encode_sides(sides)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    fresh = Encoder(EncoderSettings(name, max_length=32)).eval()
    assert not torch.allclose(
        fresh.encode_sides(sides), want, atol=1e-3
    )  # the export's weights, not the twin's
