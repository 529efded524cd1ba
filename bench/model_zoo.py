"""Public model architectures for the model benchmark, built locally (random weights, no hub downloads).

Each entry builds a torch module and an example input (batch 1, fixed shape);
:func:`export_onnx` writes it as ONNX (opset 17) into a cache folder. The
transformer and CNN families come from ``transformers`` configs (the same
classes the hub checkpoints load into), small enough to tune on a 2-core CPU;
the small CNN and the keyword-spotting model are the classic tutorial shapes
(LeNet-style CIFAR net; DS-CNN from "Hello Edge" on 49x10 MFCCs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPSET = 17


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str  # "transformer", "mlp", "cnn", "audio"
    description: str
    build: Callable[[], tuple[Any, tuple[Any, ...], list[str]]]  # module, example inputs, input names


def _bert() -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                     vocab_size=30522, max_position_embeddings=512)

    class Encoder(torch.nn.Module):  # ids in, last hidden state out (no dict outputs in the graph)
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(cfg, add_pooling_layer=False)

        def forward(self, input_ids: Any) -> Any:
            return self.bert(input_ids=input_ids).last_hidden_state

    return Encoder(), (torch.randint(0, 30522, (1, 128)),), ["input_ids"]


def _vit() -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=96, patch_size=16, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                    intermediate_size=768)

    class Vit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = ViTModel(cfg, add_pooling_layer=False)

        def forward(self, pixel_values: Any) -> Any:
            return self.vit(pixel_values=pixel_values).last_hidden_state

    return Vit(), (torch.randn(1, 3, 96, 96),), ["pixel_values"]


def _hf_vision(model_cls: str, config_cls: str, size: int, **cfg: Any) -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    import transformers

    config = getattr(transformers, config_cls)(**cfg)
    inner = getattr(transformers, model_cls)(config)

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: Any) -> Any:
            return self.inner(pixel_values=pixel_values).logits

    return Vision(), (torch.randn(1, 3, size, size),), ["pixel_values"]


def _resnet18() -> tuple[Any, tuple[Any, ...], list[str]]:
    return _hf_vision("ResNetForImageClassification", "ResNetConfig", 112, layer_type="basic",
                      depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64, num_labels=1000)


def _mobilenet_v2() -> tuple[Any, tuple[Any, ...], list[str]]:
    return _hf_vision("MobileNetV2ForImageClassification", "MobileNetV2Config", 128, depth_multiplier=1.0,
                      image_size=128, num_labels=1000, tf_padding=False)  # TF-style padding is dynamic Pad: TVM refuses it


def _small_cnn() -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, 10),
    )
    return net, (torch.randn(1, 3, 32, 32),), ["image"]


def _ds_cnn_kws() -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    from torch import nn

    def dw_block(ch: int) -> list[nn.Module]:
        return [nn.Conv2d(ch, ch, 3, padding=1, groups=ch), nn.BatchNorm2d(ch), nn.ReLU(),
                nn.Conv2d(ch, ch, 1), nn.BatchNorm2d(ch), nn.ReLU()]

    net = nn.Sequential(
        nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)), nn.BatchNorm2d(64), nn.ReLU(),
        *[m for _ in range(4) for m in dw_block(64)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 12),
    ).eval()
    return net, (torch.randn(1, 1, 49, 10),), ["mfcc"]


ZOO: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("bert_seq128", "transformer", "BERT encoder (4 layers, hidden 256), seq 128", _bert),
    ZooModel("vit_tiny96", "transformer", "ViT (4 layers, hidden 192, patch 16) on 96x96", _vit),
    ZooModel("resnet18_112", "cnn", "ResNet-18 (basic blocks 2-2-2-2) on 112x112", _resnet18),
    ZooModel("mobilenetv2_128", "cnn", "MobileNetV2 1.0 (depthwise) on 128x128", _mobilenet_v2),
    ZooModel("small_cnn", "cnn", "3-conv CIFAR-style CNN on 32x32", _small_cnn),
    ZooModel("ds_cnn_kws", "audio", "DS-CNN keyword spotting on 49x10 MFCC", _ds_cnn_kws),
]}


def export_onnx(name: str, cache: Path) -> Path:
    """``cache/NAME.onnx``, exported with torch's exporter (opset 17, batch 1) unless already there."""
    path = Path(cache) / f"{name}.onnx"
    if path.is_file():
        return path
    import torch

    torch.manual_seed(0)
    module, inputs, names = ZOO[name].build()
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(module, inputs, str(tmp), opset_version=OPSET, input_names=names,
                          output_names=["output"], dynamo=False, do_constant_folding=True)
    tmp.replace(path)
    return path
