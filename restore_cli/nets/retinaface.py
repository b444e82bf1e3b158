"""RetinaFace face detector (facexlib ``detection/retinaface.py: RetinaFace``, ``retinaface_net.py``).

Backbone (ResNet-50 or MobileNet-0.25) -> FPN over strides 8/16/32 -> one SSH context module per
level -> 1x1 heads with two anchors per cell. Attribute names equal facexlib's state-dict keys (after
its ``module.`` prefix is stripped), so its released checkpoints load strictly.

Notation: C = FPN width (256 ResNet-50, 64 MobileNet-0.25), a = LeakyReLU slope (0.1 if C <= 64,
else 0, i.e. ReLU). "CB" = conv (no bias) -> BatchNorm (eps 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RetinaFaceConfig

ANCHORS = 2  # anchors per feature-map cell
RESNET50_LAYERS = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))  # blocks, width, stride


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, slope: float | None = None,
            groups: int = 1) -> nn.Sequential:  # fmt: skip
    """CB(k, stride) with keys ``.0`` (conv) and ``.1`` (BN), then LeakyReLU(slope) unless None."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


# --- ResNet-50 body (torchvision ``resnet50`` v1.5 up to layer4) -----------------------------------


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.downsample = None
        if stride != 1 or cin != 4 * width:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, 4 * width, 1, stride, bias=False), nn.BatchNorm2d(4 * width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet50Body(nn.Module):
    """Returns layer2, layer3, layer4 (512/1024/2048 channels at strides 8/16/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (blocks, width, stride) in enumerate(RESNET50_LAYERS):
            layer = [Bottleneck(cin if b == 0 else 4 * width, width, stride if b == 0 else 1)
                     for b in range(blocks)]  # fmt: skip
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            cin = 4 * width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


# --- MobileNet-0.25 body (facexlib ``retinaface_net.py: MobileNetV1``) ------------------------------


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (``.0``, ``.1``) then pointwise 1x1 (``.3``, ``.4``), LeakyReLU(0.1) after each."""
    return nn.Sequential(
        *conv_bn(cin, cin, 3, stride, 0.1, groups=cin), *conv_bn(cin, cout, 1, 1, 0.1)
    )


class MobileNetBody(nn.Module):
    """Returns stage1, stage2, stage3 (64/128/256 channels at strides 8/16/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 3, 2, 0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
            conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1),
        )  # fmt: skip
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        return [s1, s2, self.stage3(s2)]


# --- neck and heads ---------------------------------------------------------------------------------


class FPN(nn.Module):
    """Top-down merge with nearest upsampling; the coarsest level has no merge layer."""

    def __init__(self, cins: tuple[int, int, int], c: int) -> None:
        super().__init__()
        a = 0.1 if c <= 64 else 0.0
        self.output1 = conv_bn(cins[0], c, 1, 1, a)
        self.output2 = conv_bn(cins[1], c, 1, 1, a)
        self.output3 = conv_bn(cins[2], c, 1, 1, a)
        self.merge1 = conv_bn(c, c, 3, 1, a)
        self.merge2 = conv_bn(c, c, 3, 1, a)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3, sharing the first) branches."""

    def __init__(self, c: int) -> None:
        super().__init__()
        a = 0.1 if c <= 64 else 0.0
        self.conv3X3 = conv_bn(c, c // 2)
        self.conv5X5_1 = conv_bn(c, c // 4, slope=a)
        self.conv5X5_2 = conv_bn(c // 4, c // 4)
        self.conv7X7_2 = conv_bn(c // 4, c // 4, slope=a)
        self.conv7x7_3 = conv_bn(c // 4, c // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.conv5X5_1(x)
        b7 = self.conv7x7_3(self.conv7X7_2(b5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(b5), b7], dim=1))


class Head(nn.Module):
    """1x1 conv to ``ANCHORS * k`` channels; (B, 2k, h, w) -> (B, h*w*2, k), rows (y, x, anchor)."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.conv1x1 = nn.Conv2d(c, ANCHORS * k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.k)


class RetinaFace(nn.Module):
    """Input (B, 3, H, W): BGR pixels in [0, 255] minus (104, 117, 123). Output ``(loc, logits,
    landmarks)``: (B, N, 4), (B, N, 2) class logits (column 1 = face; facexlib's test phase returns
    their softmax), (B, N, 10); rows ordered stride 8, 16, 32, then (y, x, anchor)."""

    def __init__(self, config: RetinaFaceConfig) -> None:
        super().__init__()
        self.config = config
        c = config.fpn_channels
        self.body = ResNet50Body() if config.backbone == "resnet50" else MobileNetBody()
        self.fpn = FPN(config.backbone_channels, c)
        self.ssh1, self.ssh2, self.ssh3 = SSH(c), SSH(c), SSH(c)
        self.ClassHead = nn.ModuleList(Head(c, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(c, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(c, 10) for _ in range(3))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three SSH outputs (B, C, ceil(H/s), ceil(W/s)) for s = 8, 16, 32."""
        f1, f2, f3 = self.fpn(self.body(x))
        return [self.ssh1(f1), self.ssh2(f2), self.ssh3(f3)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return tuple(
            torch.cat([head(f) for head, f in zip(heads, feats, strict=True)], dim=1)
            for heads in (self.BboxHead, self.ClassHead, self.LandmarkHead)
        )  # type: ignore[return-value]
