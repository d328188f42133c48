"""The MLP projector's pooling: mean and concatenating (space-to-depth) merges of the patch grid."""

from collections import Counter

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
    assert concat(features).tokens.shape == mean(features).tokens.shape == (2, 4, 8)


def test_mean_pooling_averages_each_cell():
    projector = _projector(pool_size=3)
    patches = torch.randn(1, 36, 4)
    expected = patches.reshape(1, 6, 6, 4)[:, 0:3, 3:6].mean(dim=(1, 2))
    torch.testing.assert_close(projector._pool(patches)[:, 1], expected)


def test_unknown_pool_mode_is_refused():
    with pytest.raises(AdapterConfigError, match="pool_mode must be 'mean' or 'concat'"):
        MLPProjectorConfig(pool_mode="max")


# ----------------------------------------------------------------------------------- binding options


class _Embedding(torch.nn.Module):
    """Stands in for the LM: `get_input_embeddings()` of a 30-token vocabulary of width 8."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(30, 8)

    def get_input_embeddings(self):
        return self.embed


def _attached(**config) -> tuple:
    projector, lm = _projector(pool_size=3, **config), _Embedding()
    projector.attach(lm)
    return projector, lm.embed.weight.detach()


def test_tokens_per_cell_keeps_each_cells_tokens_together():
    projector = _projector(pool_size=3, tokens_per_cell=3)
    assert projector.num_image_tokens == 4 * 3
    features = torch.randn(2, 1, 1, 36, 4)  # [B, T, L, S, Dv]
    tokens = projector(features).tokens  # [B, 12, D]
    assert tokens.shape == (2, 12, 8)
    # Cell 1's three tokens are the second block of the one projection of cell 1's pooled features.
    cell_out = projector.mlp(projector.pooled_features(features))[:, 1]  # [B, 3*D]
    assert torch.equal(tokens[:, 3:6], cell_out.reshape(2, 3, 8))


def test_word_tokens_are_mixtures_of_the_lms_embeddings_of_the_vocabulary():
    vocabulary = [2, 7, 11, 19]
    projector, table = _attached(tokens_per_cell=2, token_vocabulary=vocabulary)
    features = torch.randn(2, 1, 1, 36, 4)
    tokens = projector(features).tokens  # [B, 4 cells * 2, D]
    weights = projector.cell_token_logits(features).softmax(-1)  # [B, 8, 4]
    torch.testing.assert_close(tokens, weights @ table[vocabulary])
    assert projector.mlp[-1].out_features == 2 * len(vocabulary)


def test_cell_prefixes_put_the_lms_own_embeddings_before_each_cells_tokens():
    prefixes = [[1], [2, 3], [], [4]]
    projector, table = _attached(tokens_per_cell=2, cell_prefix_ids=prefixes)
    assert projector.num_image_tokens == 4 * 2 + 4
    features = torch.randn(2, 1, 1, 36, 4)
    tokens = projector(features).tokens  # [B, 12, D]
    plain = projector.mlp(projector.pooled_features(features)).reshape(2, 8, 8)  # [B, 4 cells * 2, D]
    expected = [table[[1]], plain[:, 0:2], table[[2, 3]], plain[:, 2:4], plain[:, 4:6], table[[4]], plain[:, 6:8]]
    expected = torch.cat([part.expand(2, -1, -1) if part.dim() == 2 else part for part in expected], dim=1)
    assert torch.equal(tokens, expected)
    assert not any("embed" in name for name in projector.state_dict())  # the LM's table is read, never saved


def test_prompt_tokens_follow_the_cells_and_start_as_rows_of_the_lms_embeddings():
    projector, table = _attached(token_vocabulary=[2, 7], num_prompt_tokens=3)
    assert projector.num_image_tokens == 4 + 3
    rows = [int((table == row).all(-1).nonzero()[0]) for row in projector.prompt.detach()]
    assert len(rows) == 3  # each prompt token is a copy of some row of the embedding table
    tokens = projector(torch.randn(2, 1, 1, 36, 4)).tokens  # [B, 7, D]
    assert torch.equal(tokens[:, 4:], projector.prompt.detach().expand(2, -1, -1))
    tokens.sum().backward()
    assert projector.prompt.grad is not None and projector.prompt.grad.abs().sum() > 0


def test_focus_tokens_mix_the_cells_by_how_well_they_match_the_text_before_the_image():
    projector = _projector(pool_size=3, tokens_per_cell=2, num_focus_tokens=3, focus_dim=5)
    assert projector.reads_prompt and projector.num_image_tokens == (4 + 3) * 2
    features, prompt = torch.randn(2, 1, 1, 36, 4), torch.randn(2, 8)  # [B, T, L, S, Dv], [B, D]
    tokens = projector(features, prompt_embeds=prompt).tokens  # [B, 14, D]
    assert tokens.shape == (2, 14, 8)
    pooled = projector.pooled_features(features)  # [B, 4 cells, C]
    cells = projector.mlp(pooled).reshape(2, 4, 2, 8)  # [B, cells, k, D]
    assert torch.equal(tokens[:, :8], cells.reshape(2, 8, 8))
    # Head 1: softmax over the cells of query . key / sqrt(5); its k tokens mix each cell's k tokens.
    query = projector.focus_query(prompt).view(2, 3, 5)[:, 1]  # [B, d]
    keys = projector.focus_key(pooled).view(2, 4, 3, 5)[:, :, 1]  # [B, cells, d]
    weights = (torch.einsum("bd,bsd->bs", query, keys) / 5**0.5).softmax(-1)  # [B, cells]
    torch.testing.assert_close(tokens[:, 10:12], torch.einsum("bs,bskd->bkd", weights, cells))
    # Another question moves the focus tokens and nothing else.
    other = projector(features, prompt_embeds=torch.randn(2, 8)).tokens
    assert torch.equal(other[:, :8], tokens[:, :8]) and not torch.allclose(other[:, 8:], tokens[:, 8:])
    other[:, 8:].sum().backward()
    assert projector.focus_query.weight.grad.abs().sum() > 0 and projector.focus_key.weight.grad.abs().sum() > 0


def test_focus_tokens_without_text_before_the_image_use_the_learned_bias_alone():
    projector = _projector(pool_size=3, num_focus_tokens=1, num_prompt_tokens=2)
    features = torch.randn(2, 1, 1, 36, 4)
    zeros = projector(features, prompt_embeds=torch.zeros(2, 8)).tokens
    assert torch.equal(projector(features).tokens, zeros)
    assert projector.num_image_tokens == 4 + 1 + 2  # cells, focus, then the prompt tokens
    assert torch.equal(zeros[:, 5:], projector.prompt.detach().expand(2, -1, -1))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(tokens_per_cell=0), "tokens_per_cell"),
        (dict(num_focus_tokens=-1), "num_focus_tokens"),
        (dict(num_focus_tokens=1, focus_dim=0), "focus_dim"),
        (dict(num_prompt_tokens=-1), "num_prompt_tokens"),
        (dict(token_vocabulary=[3]), "at least 2 distinct"),
        (dict(token_vocabulary=[3, 3]), "at least 2 distinct"),
        (dict(token_vocabulary=[3, 40]), "outside the LM vocabulary"),
        (dict(cell_prefix_ids=[[1], [2]]), "2 prefixes, but this tower and pool_size give 4 cells"),
    ],
)
def test_binding_options_are_validated(fields, message):
    class TextConfig(_TextConfig):
        vocab_size = 30

    geometry = VisionGeometry(hidden_size=4, num_layers=3, grid_size=6, num_prefix_tokens=1)
    with pytest.raises(AdapterConfigError, match=message):
        MLPProjector(MLPProjectorConfig(feature_layers=[-1], pool_size=3, **fields), geometry, TextConfig())


def test_word_options_need_the_lm():
    projector = _projector(pool_size=3, token_vocabulary=[1, 2])
    with pytest.raises(AdapterConfigError, match="reads the LM's embeddings"):
        projector(torch.randn(1, 1, 1, 36, 4))


def test_grid_prefixes_and_caption_vocabulary_use_the_tokenizer():
    from hf_vadapter.modeling.mlp_projector import caption_token_vocabulary, grid_position_phrases, grid_position_prefixes
    from tiny_models import build_tokenizer

    tokenizer = build_tokenizer()
    assert grid_position_phrases(3)[0] == "top left" and grid_position_phrases(3)[4] == "center"
    assert grid_position_phrases(2) == ["row 1 column 1", "row 1 column 2", "row 2 column 1", "row 2 column 2"]
    prefixes = grid_position_prefixes(tokenizer, 3)
    assert [tokenizer.decode(ids).strip() for ids in prefixes][:2] == ["top left:", "top:"]
    captions = ["a red circle", "a blue circle", "a red square", "a star"]
    counts = Counter(t for caption in captions for t in tokenizer(caption, add_special_tokens=False)["input_ids"])
    vocabulary = caption_token_vocabulary(tokenizer, captions, max_size=3)
    assert vocabulary == [token for token, _ in counts.most_common(3)]
    assert len(caption_token_vocabulary(tokenizer, captions)) == len(counts)


def test_focus_tokens_in_the_model_read_only_the_question_and_ignore_padding(tiny_bases):
    from conftest import build_model, random_image

    from hf_vadapter import VisionAdapterProcessor

    config = MLPProjectorConfig(feature_layers=[-1], pool_size=2, num_focus_tokens=2, focus_dim=8)
    model, _ = build_model(*tiny_bases("dinov2", "llama"), config)
    model.eval()
    processor = VisionAdapterProcessor.for_model(model, image_placement="end")
    questions = ["what color is the square?", "what shape is the red object on the left of the image?"]
    images = [random_image(0), random_image(1)]
    batch = processor(images=images, text=questions)
    assert batch["attention_mask"][0].min() == 0, "the batch must be left-padded for this check"
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
    for row, question in enumerate(questions):
        alone = processor(images=[images[row]], text=[question])
        # What the focus heads read: the mean input embedding of the question's tokens, the image's placeholders
        # and the padding left out.
        ids = alone["input_ids"][0]
        text = ids[: int((ids == model.config.image_token_id).nonzero()[0])]
        expected = model.get_input_embeddings()(text).mean(0)
        placeholders = batch["input_ids"] == model.config.image_token_id
        read = model._text_before_images(
            model.get_input_embeddings()(batch["input_ids"].masked_fill(placeholders, 0)), placeholders,
            batch["attention_mask"], 2,
        )
        torch.testing.assert_close(read[row], expected, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(batched[row], model(**alone).logits[0, -1], rtol=1e-4, atol=1e-4)
        # The target after the image never reaches the focus heads: the prompt's logits stay the same.
        with_target = processor(images=[images[row]], text=[question], text_target=["blue"])
        with torch.no_grad():
            prompt_logits = model(**alone).logits[0]
            torch.testing.assert_close(model(**with_target).logits[0, : len(prompt_logits)], prompt_logits)
    # Another question changes the focus tokens of the same image, and only them.
    seen = []
    model.adapter.register_forward_hook(lambda module, args, output: seen.append(output.tokens[0]))
    with torch.no_grad():
        for question in questions:
            model(**processor(images=images[:1], text=[question]))
    cells = model.adapter.num_cells
    assert torch.equal(seen[0][:cells], seen[1][:cells]) and not torch.allclose(seen[0][cells:], seen[1][cells:])
