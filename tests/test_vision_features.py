"""Reading tower features stops after the deepest layer read, with the same features as a whole run."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from hf_vadapter.modeling.vision_features import VisionGeometry, find_layer_list, layers_up_to, select_features
from tiny_models import IMAGE_SIZE, TOWER_SIZES, TOWERS

NUM_LAYERS = 4


def _tower(kind: str):
    torch.manual_seed(0)
    spec = dict(TOWERS[kind])
    config = AutoConfig.for_model(spec.pop("model_type"), **{**TOWER_SIZES, "num_hidden_layers": NUM_LAYERS}, **spec)
    tower = AutoModel.from_config(config).eval()
    return tower, VisionGeometry.from_config(config, IMAGE_SIZE)


def _layers_run(tower) -> list:
    """Indices of the encoder layers that ran, recorded by forward hooks."""
    parent, attribute = find_layer_list(tower, NUM_LAYERS)
    ran = []
    for index, layer in enumerate(getattr(parent, attribute)):
        layer.register_forward_hook(lambda *_, index=index: ran.append(index))
    return ran


@pytest.mark.parametrize("kind", sorted(TOWERS))
@pytest.mark.parametrize("layers", [[1, 2], [0], [-1], [-3, 2]])
def test_features_equal_a_whole_run_and_skip_the_layers_above(kind, layers):
    tower, geometry = _tower(kind)
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = tower(pixel_values=pixels, output_hidden_states=True).hidden_states  # NUM_LAYERS + 1 entries
        ran = _layers_run(tower)
        features = select_features(tower, pixels, geometry, layers, "both", norm=False)  # [B, 1, L, S, Dv]
    expected = torch.stack([whole[layer] for layer in layers], dim=1)  # [B, L, S, Dv]
    if not geometry.has_cls:
        features = features[:, :, :, 1:]  # drop the patch mean that stands in for [CLS]
    assert torch.equal(features[:, 0], expected)  # bit-identical, not merely close
    deepest = max(layer % (NUM_LAYERS + 1) for layer in layers)
    assert ran == list(range(max(deepest, 1)))  # the embeddings alone still run one layer


def test_the_layer_list_is_restored_even_when_the_tower_fails():
    tower, geometry = _tower("dinov2")
    parent, attribute = find_layer_list(tower, NUM_LAYERS)
    full = getattr(parent, attribute)
    with pytest.raises(ValueError, match="channel"):
        select_features(tower, torch.randn(1, 2, IMAGE_SIZE, IMAGE_SIZE), geometry, [1], "patch", norm=False)
    assert getattr(parent, attribute) is full and len(full) == NUM_LAYERS


def test_a_tower_without_a_found_layer_list_runs_whole():
    tower, _ = _tower("vit")
    ran = _layers_run(tower)
    assert find_layer_list(tower, NUM_LAYERS + 1) is None
    with torch.no_grad(), layers_up_to(tower, NUM_LAYERS + 1, last=1):
        tower(pixel_values=torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert ran == list(range(NUM_LAYERS))
