"""The LM anatomy against the real layers of 12 tiny random LM families, with eager and sdpa attention.

The query check observes what the attention kernel truly receives: it wraps the kernel the attention modules
dispatch to (the modeling module's `eager_attention_forward` for eager, the `ALL_ATTENTION_FUNCTIONS` entry for
sdpa) and compares it, bit for bit, with what the anatomy recomputes from a forward hook's inputs.
"""

import ast
import contextlib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, BertConfig, BertLMHeadModel, LlamaConfig, LlamaModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_vadapter.modeling.errors import UnsupportedArchitectureError
from hf_vadapter.modeling.lm_anatomy import SUPPORTED_MODEL_TYPES, LMAnatomy, get_lm_anatomy

COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
    pad_token_id=0,
)
# Per family: what makes its tiny config exercise the family's particularities.
FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(num_key_value_heads=2),
    "mistral": dict(num_key_value_heads=2, sliding_window=4),
    "qwen2": dict(num_key_value_heads=2),
    "qwen3": dict(num_key_value_heads=2, head_dim=16),
    "gemma": dict(num_key_value_heads=2, head_dim=16),
    "gemma2": dict(num_key_value_heads=2, head_dim=16, sliding_window=4),  # softcap 50 by default
    "gemma3_text": dict(
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=50.0,  # stored, never passed to the kernel
    ),
    "phi3": dict(num_key_value_heads=2, partial_rotary_factor=0.5),
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64),
    "gpt2": dict(scale_attn_by_inverse_layer_idx=True),
    "smollm3": dict(num_key_value_heads=2, no_rope_layers=[1, 0]),  # layer 1 has no rotary
    "olmo2": dict(num_key_value_heads=2),
}
NO_SDPA = {"gemma2"}  # transformers 5.23 refuses sdpa for Gemma2ForCausalLM


def _family_params() -> list:
    params = []
    for model_type in FAMILY_CONFIGS:
        for impl in ("eager", "sdpa"):
            skip = impl == "sdpa" and model_type in NO_SDPA
            marks = pytest.mark.skip(reason=f"{model_type} has no sdpa") if skip else ()
            params.append(pytest.param(model_type, impl, id=f"{model_type}-{impl}", marks=marks))
    return params


FAMILIES = pytest.mark.parametrize("model_type,impl", _family_params())


@functools.cache
def tiny_lm(model_type: str, impl: str) -> nn.Module:
    """A tiny random causal LM in eval mode; shared between tests, which must leave it unchanged."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **COMMON, **FAMILY_CONFIGS[model_type])
    return AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval()


def input_ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(1, COMMON["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(1))


@dataclass
class AttentionCall:
    """One attention call: what its forward pre-hook saw and what its kernel received."""

    attn: nn.Module
    hidden_states: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    kernel_kwargs: dict[str, Any] | None = None


@contextlib.contextmanager
def record_attention(anatomy: LMAnatomy) -> Iterator[list[AttentionCall]]:
    """Record the inputs of every attention module and of the kernel each one calls."""
    calls: list[AttentionCall] = []

    def hook(attn, args, kwargs):
        calls.append(AttentionCall(attn, *anatomy.hook_inputs(args, kwargs)))

    def wrap(kernel):
        def recording_kernel(module, query, key, value, attention_mask, **kwargs):
            assert calls[-1].attn is module
            calls[-1].query, calls[-1].key, calls[-1].value, calls[-1].kernel_kwargs = query, key, value, kwargs
            return kernel(module, query, key, value, attention_mask, **kwargs)

        return recording_kernel

    handles = [
        anatomy.attention(i).register_forward_pre_hook(hook, with_kwargs=True)
        for i in range(len(anatomy.decoder_layers))
    ]
    impl = anatomy.lm.config._attn_implementation
    modeling = sys.modules[type(anatomy.attention(0)).__module__]
    original_eager = modeling.eager_attention_forward
    try:
        if impl == "eager":
            modeling.eager_attention_forward = wrap(original_eager)
        else:
            ALL_ATTENTION_FUNCTIONS[impl] = wrap(ALL_ATTENTION_FUNCTIONS[impl])
        yield calls
    finally:
        modeling.eager_attention_forward = original_eager
        if impl != "eager":
            del ALL_ATTENTION_FUNCTIONS[impl]  # drops the local override, back to the global kernel
        for handle in handles:
            handle.remove()
    assert all(call.query is not None for call in calls), "a kernel call was not observed"


def prefill_then_decode(anatomy: LMAnatomy) -> tuple[list[AttentionCall], list[AttentionCall]]:
    ids = input_ids()
    with torch.no_grad(), record_attention(anatomy) as prefill:
        past = anatomy.lm(ids, use_cache=True).past_key_values
    with torch.no_grad(), record_attention(anatomy) as decode:
        anatomy.lm(ids[:, -1:], past_key_values=past, use_cache=True)
    assert len(prefill) == len(decode) == len(anatomy.decoder_layers)
    return prefill, decode


@FAMILIES
def test_query_scale_and_softcap_equal_what_the_kernel_receives(model_type: str, impl: str) -> None:
    anatomy = get_lm_anatomy(tiny_lm(model_type, impl))
    for step in prefill_then_decode(anatomy):
        for call in step:
            with torch.no_grad():
                query = anatomy.query_states(call.attn, call.hidden_states, call.position_embeddings)
            assert query.shape == call.query.shape
            assert torch.equal(query, call.query)
            assert anatomy.softmax_scale(call.attn) == call.kernel_kwargs["scaling"]
            assert anatomy.softcap(call.attn) == call.kernel_kwargs.get("softcap")


@FAMILIES
def test_prompt_key_values_come_from_the_layers_own_projections(model_type: str, impl: str) -> None:
    anatomy = get_lm_anatomy(tiny_lm(model_type, impl))
    repeats = anatomy.num_heads // anatomy.num_kv_heads
    prefill, _ = prefill_then_decode(anatomy)
    for call in prefill:
        with torch.no_grad():
            keys, values = anatomy.prompt_key_values(call.attn, call.hidden_states)
        batch, length, _ = call.hidden_states.shape
        assert keys.shape == values.shape == (batch, anatomy.num_heads, length, anatomy.head_dim)
        assert torch.equal(values, call.value.repeat_interleave(repeats, dim=1))
        # Rotary at position 0 is the identity (cos 1, sin 0), so the kernel's first key is the un-rotated key.
        assert torch.equal(keys[:, :, :1], call.key[:, :, :1].repeat_interleave(repeats, dim=1))
        with torch.no_grad():  # a batch-shared prompt, expanded (stride 0) or broadcast
            shared = anatomy.prompt_key_values(call.attn, call.hidden_states[:1])
            expanded = anatomy.prompt_key_values(call.attn, call.hidden_states[:1].expand(batch, -1, -1))
        for one, many in zip(shared, expanded):  # equal up to GEMM blocking: 1 vs B rows of prompts
            torch.testing.assert_close(one.expand_as(many), many)


@FAMILIES
def test_project_output_is_the_output_projection_without_bias(model_type: str, impl: str) -> None:
    anatomy = get_lm_anatomy(tiny_lm(model_type, impl))
    attn = anatomy.attention(1)
    projection = next(module for name, module in attn.named_children() if name in ("o_proj", "out_proj", "c_proj"))
    x = torch.randn(2, 5, anatomy.num_heads * anatomy.head_dim)
    bias = projection.bias if projection.bias is not None else 0.0
    with torch.no_grad():
        torch.testing.assert_close(anatomy.project_output(attn, x), projection(x) - bias)


@FAMILIES
def test_layer_pre_hook_overwrites_one_position(model_type: str, impl: str) -> None:
    anatomy = get_lm_anatomy(tiny_lm(model_type, impl))
    slot = 3
    ids = input_ids()

    def overwrite_slot(layer, args, kwargs):
        hidden = anatomy.layer_hidden_states(args, kwargs).clone()  # [B, S, hidden]
        hidden[:, slot] = torch.randn(hidden.shape[-1], generator=torch.Generator().manual_seed(2))
        return anatomy.replace_layer_hidden_states(args, kwargs, hidden)

    with torch.no_grad():
        reference = anatomy.lm(ids).logits
        handle = anatomy.decoder_layers[1].register_forward_pre_hook(overwrite_slot, with_kwargs=True)
        try:
            edited = anatomy.lm(ids).logits
        finally:
            handle.remove()
    assert torch.equal(edited[:, :slot], reference[:, :slot])
    assert ((edited[:, slot:] - reference[:, slot:]).abs().amax(dim=-1) > 0).all()


def test_replace_layer_hidden_states_keeps_other_inputs() -> None:
    hidden, new, past, mask = torch.zeros(1), torch.ones(1), object(), object()
    assert LMAnatomy.replace_layer_hidden_states((hidden, past, mask), {"use_cache": True}, new) == (
        (new, past, mask),
        {"use_cache": True},
    )
    args, kwargs = LMAnatomy.replace_layer_hidden_states((), {"hidden_states": hidden, "x": 1}, new)
    assert args == () and kwargs["hidden_states"] is new and kwargs["x"] == 1


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen3", "opt"])
def test_sizes_and_parameter_groups(model_type: str) -> None:
    lm = tiny_lm(model_type, "eager")
    anatomy = get_lm_anatomy(lm)
    # (linears, norms incl. q/k norms) per layer; outside the layers: one final norm, and lm_head as the only linear.
    per_layer = {"llama": (7, 2), "gpt2": (4, 2), "qwen3": (7, 4), "opt": (6, 2)}[model_type]
    layers = len(anatomy.decoder_layers)
    linears, norms = anatomy.linear_layers(), anatomy.norm_layers()
    assert len(linears) == per_layer[0] * layers
    assert len(norms) == per_layer[1] * layers + 1
    assert all(lm.get_submodule(name) is module for name, module in linears + norms)
    assert lm.get_output_embeddings() not in [module for _, module in linears]
    assert (anatomy.hidden_size, anatomy.num_heads, anatomy.head_dim) == (64, 4, 16)
    assert anatomy.num_kv_heads == FAMILY_CONFIGS[model_type].get("num_key_value_heads", 4)
    assert isinstance(anatomy.decoder_layers, nn.ModuleList)


def test_every_supported_type_is_tested() -> None:
    assert set(SUPPORTED_MODEL_TYPES) == set(FAMILY_CONFIGS)


def test_unknown_architecture_names_the_supported_types() -> None:
    bert = BertLMHeadModel(
        BertConfig(
            vocab_size=32,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            is_decoder=True,
        )
    )
    with pytest.raises(UnsupportedArchitectureError) as error:
        get_lm_anatomy(bert)
    assert "'bert'" in str(error.value)
    assert all(model_type in str(error.value) for model_type in SUPPORTED_MODEL_TYPES)


def test_a_base_model_instead_of_the_causal_lm_is_refused() -> None:
    base = LlamaModel(LlamaConfig(**COMMON, num_key_value_heads=2))
    with pytest.raises(UnsupportedArchitectureError, match="model.layers"):
        get_lm_anatomy(base)


def test_module_imports_only_torch_transformers_stdlib_and_siblings() -> None:
    source = Path(__file__).parents[1] / "modeling" / "lm_anatomy.py"
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module, "siblings only, as `from .x import y`"
                continue
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= {"torch", "transformers"} | sys.stdlib_module_names, roots
