"""The MLP projector's pooling: mean and concatenating (space-to-depth) merges of the patch grid."""

import pytest
import torch

from hf_vadapter import MLPProjectorConfig
from hf_vadapter.modeling.errors import AdapterConfigError
from hf_vadapter.modeling.mlp_projector import MLPProjector
from hf_vadapter.modeling.vision_features import VisionGeometry


class _TextConfig:
    hidden_size = 8


def _projector(**config) -> MLPProjector:
    geometry = VisionGeometry(hidden_size=4, num_layers=3, grid_size=6, num_prefix_tokens=1)
    return MLPProjector(MLPProjectorConfig(feature_layers=[-1], input_norm=False, **config), geometry, _TextConfig())


def test_concat_pooling_stacks_each_cells_patches_in_raster_order():
    projector = _projector(pool_size=3, pool_mode="concat")
    patches = torch.randn(2, 36, 4)  # [N, 6*6 patches, C]
    merged = projector._pool(patches)  # [N, 2*2 cells, 3*3*C]
    assert merged.shape == (2, 4, 36)
    grid = patches.reshape(2, 6, 6, 4)
    # The cell in the second row, first column covers patch rows 3-5 and columns 0-2.
    expected = grid[:, 3:6, 0:3].reshape(2, 36)
    assert torch.equal(merged[:, 2], expected)


def test_concat_pooling_widens_only_the_first_layer_and_keeps_the_token_count():
    mean, concat = _projector(pool_size=3), _projector(pool_size=3, pool_mode="concat")
    assert mean.num_image_tokens == concat.num_image_tokens == 4
    assert mean.mlp[0].in_features == 4 and concat.mlp[0].in_features == 36
    features = torch.randn(2, 1, 1, 36, 4)  # [B, T, L, S, Dv]
    assert concat(features).shape == mean(features).shape == (2, 4, 8)


def test_mean_pooling_averages_each_cell():
    projector = _projector(pool_size=3)
    patches = torch.randn(1, 36, 4)
    expected = patches.reshape(1, 6, 6, 4)[:, 0:3, 3:6].mean(dim=(1, 2))
    torch.testing.assert_close(projector._pool(patches)[:, 1], expected)


def test_unknown_pool_mode_is_refused():
    with pytest.raises(AdapterConfigError, match="pool_mode must be 'mean' or 'concat'"):
        MLPProjectorConfig(pool_mode="max")
