"""LLaVA-style MLP projector: tower features, optionally pooled, projected into the LM's embedding width.

Five options make the visual tokens easier for a frozen LM to bind (which colour goes with which shape):
- `tokens_per_cell` > 1 emits several tokens per pooled cell, so an object's attributes can arrive as separate
  word-like tokens, the way the LM reads "red star";
- `token_vocabulary` makes each visual token a softmax mixture of the LM's own input embeddings of those tokens
  (for example the words of the training captions), so visual tokens lie on the LM's word-embedding manifold;
- `cell_prefix_ids` puts fixed LM tokens before each cell's tokens, for example the words of its grid position
  ("top left", "center", ...), which a frozen LM already knows;
- `num_prompt_tokens` appends learned free tokens after the cells (a soft prompt, as in prompt tuning): word-anchored
  cells can only say what is in the image, and these say what to do with it;
- `num_focus_tokens` appends tokens that depend on the question: each is an attention-weighted mix of the cells'
  tokens, weighted by how well each cell's features match the text before the image (the mean of its LM input
  embeddings). The projector then finds "the square" for "What color is the square?" itself, and the frozen LM reads
  one object's attributes from one token instead of pairing them across the cells. It needs the image after the
  question (`VisionAdapterProcessor(image_placement="end")`); with no text before the image every head mixes the
  cells with the same learned weights.
"""

from dataclasses import dataclass
from typing import ClassVar, List, Optional

import torch
from torch import nn
from transformers.activations import ACT2FN

from .adapter_base import AdapterOutput, VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError
from .vision_features import VisionGeometry


@dataclass
class MLPProjectorConfig(AdapterConfig):
    """Config of the MLP projector baseline.

    Args:
        num_layers: 1 (a linear layer) or 2 (linear, activation, linear, as in LLaVA-1.5).
        hidden_act: activation between the two layers.
        pool_size: merge `pool_size x pool_size` neighbouring patches into one visual token before projecting
            (1 keeps every patch); pooling 2 turns 16x16 patches into 64 visual tokens.
        pool_mode: how merged patches become one token. "mean" averages them; "concat" stacks their channels
            (space-to-depth, the "pixel shuffle" of Idefics3), so a small object covering one patch of the cell
            is not diluted by the background around it, at the cost of a `pool_size**2` times wider first layer.
        input_norm: LayerNorm each layer's features before concatenating them. Hidden states of a tower's early
            and late layers differ in scale by an order of magnitude (DINOv2-small: std 0.05 at layer 3, 2.2 at
            layer 12), so without it the projector starts out nearly blind to the early layers.
        tokens_per_cell: visual tokens emitted per pooled cell (kept together, in reading order).
        token_vocabulary: LM token ids; when given, each visual token is a softmax mixture of the LM's input
            embeddings of these tokens instead of a free vector (see `caption_token_vocabulary`).
        cell_prefix_ids: one list of LM token ids per pooled cell, embedded by the frozen LM and placed before that
            cell's tokens (see `grid_position_prefixes`).
        num_prompt_tokens: learned tokens appended after every image's cells, the same for every image; they start
            as copies of randomly drawn rows of the LM's input embeddings.
        num_focus_tokens: attention heads over the cells, each adding `tokens_per_cell` tokens after the cells (and
            before the prompt tokens): the mix of the cells' tokens weighted by softmax(query . key / sqrt(focus_dim)),
            the query projected from the mean input embedding of the text before the image, each key from a cell's
            pooled features.
        focus_dim: width of the focus heads' queries and keys.

    Several `feature_layers` are concatenated along the channels, as LLaVA does with multi-layer features.
    """

    adapter_type: ClassVar[str] = "mlp_projector"

    num_layers: int = 2
    hidden_act: str = "gelu"
    pool_size: int = 1
    input_norm: bool = True
    pool_mode: str = "mean"
    tokens_per_cell: int = 1
    token_vocabulary: Optional[List[int]] = None
    cell_prefix_ids: Optional[List[List[int]]] = None
    num_prompt_tokens: int = 0
    num_focus_tokens: int = 0
    focus_dim: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_layers not in (1, 2):
            raise AdapterConfigError(f"MLPProjectorConfig.num_layers must be 1 or 2, got {self.num_layers}.")
        if self.pool_size < 1:
            raise AdapterConfigError(f"MLPProjectorConfig.pool_size must be >= 1, got {self.pool_size}.")
        if self.pool_mode not in ("mean", "concat"):
            raise AdapterConfigError(f"MLPProjectorConfig.pool_mode must be 'mean' or 'concat', got {self.pool_mode!r}.")
        if not isinstance(self.tokens_per_cell, int) or self.tokens_per_cell < 1:
            raise AdapterConfigError(f"MLPProjectorConfig.tokens_per_cell must be an int >= 1, got {self.tokens_per_cell!r}.")
        if not isinstance(self.num_prompt_tokens, int) or self.num_prompt_tokens < 0:
            raise AdapterConfigError(f"MLPProjectorConfig.num_prompt_tokens must be an int >= 0, got {self.num_prompt_tokens!r}.")
        if not isinstance(self.num_focus_tokens, int) or self.num_focus_tokens < 0:
            raise AdapterConfigError(f"MLPProjectorConfig.num_focus_tokens must be an int >= 0, got {self.num_focus_tokens!r}.")
        if not isinstance(self.focus_dim, int) or self.focus_dim < 1:
            raise AdapterConfigError(f"MLPProjectorConfig.focus_dim must be an int >= 1, got {self.focus_dim!r}.")
        if self.token_vocabulary is not None:
            if len(self.token_vocabulary) < 2 or len(set(self.token_vocabulary)) != len(self.token_vocabulary):
                raise AdapterConfigError("MLPProjectorConfig.token_vocabulary must hold at least 2 distinct token ids.")
            self.token_vocabulary = [int(token) for token in self.token_vocabulary]
        if self.cell_prefix_ids is not None:
            self.cell_prefix_ids = [[int(token) for token in prefix] for prefix in self.cell_prefix_ids]


class MLPProjector(VisionAdapter):
    """Maps image features [B, T, L, S, Dv] to visual tokens [B, T * S', D] with S' the (pooled) token count."""

    def __init__(self, config: MLPProjectorConfig, geometry: VisionGeometry, text_config):
        super().__init__()
        self.config = config
        self.geometry = geometry
        if config.pool_size > 1 and config.feature_select != "patch":
            raise AdapterConfigError("MLPProjectorConfig.pool_size > 1 pools the patch grid: use feature_select='patch'.")
        if config.pool_size > 1 and geometry.grid_size % config.pool_size:
            raise AdapterConfigError(
                f"pool_size={config.pool_size} does not divide the tower's {geometry.grid_size}x{geometry.grid_size} "
                "patch grid."
            )
        self.input_norm = nn.LayerNorm(geometry.hidden_size) if config.input_norm else nn.Identity()
        in_features = geometry.hidden_size * len(config.feature_layers)
        if config.pool_mode == "concat":
            in_features *= config.pool_size**2
        width = text_config.hidden_size
        # Each cell's output: k tokens of the LM's width, or k sets of mixture logits over the token vocabulary.
        out_features = config.tokens_per_cell * (len(config.token_vocabulary) if config.token_vocabulary else width)
        layers = [nn.Linear(in_features, out_features if config.num_layers == 1 else width)]
        if config.num_layers == 2:
            layers += [ACT2FN[config.hidden_act], nn.Linear(width, out_features)]
        self.mlp = nn.Sequential(*layers)
        vocab_size = getattr(text_config, "vocab_size", None)
        for token in (config.token_vocabulary or []) + [t for p in config.cell_prefix_ids or [] for t in p]:
            if vocab_size is not None and not 0 <= token < vocab_size:
                raise AdapterConfigError(f"Token id {token} in MLPProjectorConfig is outside the LM vocabulary (0..{vocab_size - 1}).")
        if config.cell_prefix_ids is not None and len(config.cell_prefix_ids) != self.num_cells:
            raise AdapterConfigError(
                f"MLPProjectorConfig.cell_prefix_ids holds {len(config.cell_prefix_ids)} prefixes, but this tower and "
                f"pool_size give {self.num_cells} cells."
            )
        self.prompt = nn.Parameter(torch.zeros(config.num_prompt_tokens, width)) if config.num_prompt_tokens else None
        if config.num_focus_tokens:
            heads = config.num_focus_tokens * config.focus_dim
            self.focus_query = nn.Linear(width, heads)  # from the text before the image (LM input width)
            self.focus_key = nn.Linear(in_features, heads)  # from each cell's pooled features
        self._input_embeddings: tuple = ()  # the frozen LM's embedding, set by `attach` (not a submodule: not saved)

    @property
    def num_cells(self) -> int:
        return self.geometry.num_tokens(self.config.feature_select) // self.config.pool_size**2

    @property
    def num_image_tokens(self) -> int:
        prefixes = sum(len(prefix) for prefix in self.config.cell_prefix_ids or [])
        per_cell = self.config.tokens_per_cell
        return (self.num_cells + self.config.num_focus_tokens) * per_cell + prefixes + self.config.num_prompt_tokens

    @property
    def reads_prompt(self) -> bool:
        return self.config.num_focus_tokens > 0

    def attach(self, language_model: nn.Module) -> None:
        embedding = language_model.get_input_embeddings()
        if self.config.token_vocabulary or self.config.cell_prefix_ids:
            self._input_embeddings = (embedding,)
        if self.prompt is not None:  # start at the scale of real words (a loaded adapter overwrites it)
            rows = torch.randint(embedding.num_embeddings, (self.prompt.shape[0],), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                self.prompt.copy_(embedding.weight[rows].float())

    def _embed_tokens(self, token_ids: List[int], like: torch.Tensor) -> torch.Tensor:
        """The frozen LM's input embeddings of `token_ids`: [len, D] in `like`'s dtype and device."""
        if not self._input_embeddings:
            raise AdapterConfigError("This MLP projector reads the LM's embeddings: build it inside a VisionAdapterForCausalLM.")
        embedding = self._input_embeddings[0]
        ids = torch.tensor(token_ids, device=embedding.weight.device)
        return embedding(ids).detach().to(device=like.device, dtype=like.dtype)

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        # features: [N, S, C] with S = grid * grid patch tokens
        n, _, c = features.shape
        grid, pool = self.geometry.grid_size, self.config.pool_size
        if self.config.pool_mode == "concat":
            cells = grid // pool
            features = features.reshape(n, cells, pool, cells, pool, c).permute(0, 1, 3, 2, 4, 5)
            return features.reshape(n, cells * cells, pool * pool * c)  # [N, g*g, p*p*C]
        features = features.transpose(1, 2).reshape(n, c, grid, grid)
        features = nn.functional.avg_pool2d(features, pool)  # [N, C, g, g]
        return features.flatten(2).transpose(1, 2)  # [N, g*g, C]

    def pooled_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """What the MLP reads: image features [B, T, L, S, Dv], normed and pooled, as [B*T, S', L*Dv] (or
        [B*T, S', p*p*L*Dv] with `pool_mode="concat"`)."""
        b, t, num_layers, s, d = image_features.shape
        image_features = self.input_norm(image_features)
        features = image_features.permute(0, 1, 3, 2, 4).reshape(b * t, s, num_layers * d)  # [B*T, S, L*Dv]
        return self._pool(features) if self.config.pool_size > 1 else features

    def cell_token_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """Mixture logits over `token_vocabulary`: [B*T, S'*k, V] (only with a token vocabulary)."""
        return self._logits_of(self.pooled_features(image_features))

    def _logits_of(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.mlp(pooled)  # [B*T, S', k*V]
        return out.reshape(out.shape[0], -1, len(self.config.token_vocabulary))

    def forward(self, image_features: torch.Tensor, prompt_embeds: Optional[torch.Tensor] = None) -> AdapterOutput:
        """Image features [B, T, L, S, Dv] (and, with focus tokens, the text before each image [B, D]) -> visual
        tokens [B, T*N, D]."""
        b, t = image_features.shape[:2]
        pooled = self.pooled_features(image_features)  # [B*T, S', C]
        if self.config.token_vocabulary:
            logits = self._logits_of(pooled)  # [B*T, S'*k, V]
            vocabulary = self._embed_tokens(self.config.token_vocabulary, logits)  # [V, D]
            tokens = logits.softmax(-1) @ vocabulary  # [B*T, S'*k, D]
        else:
            out = self.mlp(pooled)  # [B*T, S', k*D]
            tokens = out.reshape(out.shape[0], -1, out.shape[-1] // self.config.tokens_per_cell)  # [B*T, S'*k, D]
        focus = self._focus_tokens(pooled, tokens, prompt_embeds, t) if self.config.num_focus_tokens else None
        if self.config.cell_prefix_ids:
            tokens = self._with_cell_prefixes(tokens)  # [B*T, N, D]
        if focus is not None:
            tokens = torch.cat([tokens, focus], dim=1)
        if self.prompt is not None:
            tokens = torch.cat([tokens, self.prompt.to(tokens.dtype).expand(tokens.shape[0], -1, -1)], dim=1)
        return AdapterOutput(tokens=tokens.reshape(b, t * tokens.shape[1], tokens.shape[2]))  # [B, T*N, D]

    def _focus_tokens(
        self, pooled: torch.Tensor, cell_tokens: torch.Tensor, prompt_embeds: Optional[torch.Tensor], frames: int
    ) -> torch.Tensor:
        """Each head's mix of the cells' tokens [B*T, S'*k, D], weighted by query (text before the image) against
        key (the cell's pooled features [B*T, S', C]): [B*T, H*k, D]."""
        heads, dim, k = self.config.num_focus_tokens, self.config.focus_dim, self.config.tokens_per_cell
        n, cells, _ = pooled.shape
        if prompt_embeds is None:  # no text before the image: the query is the learned bias alone
            prompt_embeds = pooled.new_zeros(n // frames, self.focus_query.in_features)
        query = self.focus_query(prompt_embeds.to(pooled.dtype)).repeat_interleave(frames, 0)  # [B*T, H*d]
        keys = self.focus_key(pooled).view(n, cells, heads, dim)  # [B*T, S', H, d]
        scores = torch.einsum("nhd,nshd->nhs", query.view(n, heads, dim), keys) / dim**0.5  # [B*T, H, S']
        values = cell_tokens.reshape(n, cells, k * cell_tokens.shape[-1])  # [B*T, S', k*D]
        return (scores.softmax(-1) @ values).reshape(n, heads * k, -1)  # [B*T, H*k, D]

    def _with_cell_prefixes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Interleave each cell's prefix embeddings before its k tokens: [B*T, S'*k, D] -> [B*T, N, D]."""
        k = self.config.tokens_per_cell
        pieces = []
        for cell, prefix in enumerate(self.config.cell_prefix_ids):
            if prefix:
                pieces.append(self._embed_tokens(prefix, tokens).expand(tokens.shape[0], -1, -1))
            pieces.append(tokens[:, cell * k : (cell + 1) * k])
        return torch.cat(pieces, dim=1)


GRID_3X3_NAMES = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")


def grid_position_phrases(grid: int) -> List[str]:
    """A phrase per cell of a `grid` x `grid` layout in reading order: "top left", ..., "bottom right" for 3x3,
    "row i column j" otherwise."""
    if grid == 3:
        return list(GRID_3X3_NAMES)
    return [f"row {row + 1} column {col + 1}" for row in range(grid) for col in range(grid)]


def grid_position_prefixes(tokenizer, grid: int, template: str = " {}:") -> List[List[int]]:
    """`cell_prefix_ids` naming each cell's grid position in the LM's own words, e.g. " top left:"."""
    return [tokenizer(template.format(phrase), add_special_tokens=False)["input_ids"] for phrase in grid_position_phrases(grid)]


def caption_token_vocabulary(tokenizer, captions, max_size: int = 512) -> List[int]:
    """The `max_size` most frequent LM tokens of `captions` (ties by first appearance): a `token_vocabulary` that
    holds the words a data set uses to describe its images."""
    counts: dict = {}
    for caption in captions:
        for token in tokenizer(caption, add_special_tokens=False)["input_ids"]:
            counts[token] = counts.get(token, 0) + 1
    return sorted(counts, key=lambda token: -counts[token])[:max_size]
