import numpy as np
import pytest

from normalcrafter_pipeline.formats.clips import write_clip
from normalcrafter_pipeline.formats.sequences import ClipFolderSequence


def test_clip_folder_sequence_reads_frames_in_order_with_masks(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    normal = rng.standard_normal((3, 4, 5, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[1, 0, 0] = 0.0  # an unlabelled pixel
    mask = np.ones((3, 4, 5), bool)
    mask[2, 3, 4] = False
    write_clip(tmp_path / "clip", rgb, normal, mask=mask, normal_format="npy")

    sequence = ClipFolderSequence(tmp_path / "clip")
    assert sequence.name == "clip" and len(sequence) == 3
    records = list(sequence)
    for i, record in enumerate(records):
        np.testing.assert_array_equal(record.rgb, rgb[i])
        np.testing.assert_allclose(record.normal, normal[i])
    assert not records[1].valid[0, 0] and records[1].valid.sum() == 19
    assert not records[2].valid[3, 4] and records[2].valid.sum() == 19
    with pytest.raises(IndexError, match="Frame 3 of sequence 'clip'"):
        sequence.load(3)
