"""Inception-I3D (Carreira & Zisserman 2017), the Kinetics-400 network behind FVD.

Module and parameter names follow piergiaj/pytorch-i3d, so `i3d_pretrained_400.pt` (the TF-Hub
`deepmind/i3d-kinetics-400/1` weights as converted for VideoGPT, TATS and cd-fvd) loads with
strict=True. Padding is TF "SAME", computed from the input size at run time (asymmetric: the extra
pixel goes after); batch-norm epsilon is 1e-3 as in the TF-Hub graph. Max pools zero-pad: they only
ever see ReLU outputs (>= 0), where zero padding and TF's -inf padding give the same maximum.
The FVD feature is the 400 pre-softmax logits averaged over time (TF-Hub's `default` output).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpdm_core.errors import BadInputError
from hpdm_core.metrics.resize import resize_frames


def call_scripted(scripted, name: str, what: str, feature_dim: int, *args, **kwargs) -> torch.Tensor:
    """Run a loaded TorchScript detector; BadInputError (exit 2) when it is some other network: its forward
    fails on StyleGAN-V's call, or its output is not [B, feature_dim]."""
    try:
        out = scripted(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 -- any TorchScript error means: not this network
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInputError(f"{name} is TorchScript but not {what}: its forward fails on StyleGAN-V's call "
                            f"({first[:200]})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != feature_dim:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadInputError(f"{name} is TorchScript but not {what}: it returns {shape}, not [batch, {feature_dim}]")
    return out

NUM_CLASSES = 400
INPUT_SIZE = 224
MIN_FRAMES = 9  # three stride-2 stages then a temporal pool of 2: ceil(T / 8) >= 2


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: list[int], stride: list[int]) -> torch.Tensor:
    t_pad = same_padding(x.shape[2], kernel[0], stride[0])
    h_pad = same_padding(x.shape[3], kernel[1], stride[1])
    w_pad = same_padding(x.shape[4], kernel[2], stride[2])
    return F.pad(x, [w_pad[0], w_pad[1], h_pad[0], h_pad[1], t_pad[0], t_pad[1]])


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: list[int], stride: list[int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> BatchNorm -> ReLU, or a plain biased conv for the logits."""

    def __init__(self, in_channels: int, out_channels: int, kernel: list[int] = [1, 1, 1],
                 stride: list[int] = [1, 1, 1], norm_and_relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm_and_relu = kernel, stride, norm_and_relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=not norm_and_relu)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if norm_and_relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.norm_and_relu:
            x = F.relu(self.bn(x))
        return x


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1; concatenated."""

    def __init__(self, in_channels: int, widths: list[int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], [3, 3, 3])
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], [3, 3, 3])
        self.b3a = MaxPool3dSame([3, 3, 3], [1, 1, 1])
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """The 400-class RGB I3D. Input float [B, 3, T, H, W] in [-1, 1] (224x224 for the real
    protocol); `forward` returns the time-averaged logits [B, num_classes]."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, [7, 7, 7], [2, 2, 2])
        self.MaxPool3d_2a_3x3 = MaxPool3dSame([1, 3, 3], [1, 2, 2])
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, [3, 3, 3])
        self.MaxPool3d_3a_3x3 = MaxPool3dSame([1, 3, 3], [1, 2, 2])
        self.Mixed_3b = InceptionModule(192, [64, 96, 128, 16, 32, 32])
        self.Mixed_3c = InceptionModule(256, [128, 128, 192, 32, 96, 64])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame([3, 3, 3], [2, 2, 2])
        self.Mixed_4b = InceptionModule(480, [192, 96, 208, 16, 48, 64])
        self.Mixed_4c = InceptionModule(512, [160, 112, 224, 24, 64, 64])
        self.Mixed_4d = InceptionModule(512, [128, 128, 256, 24, 64, 64])
        self.Mixed_4e = InceptionModule(512, [112, 144, 288, 32, 64, 64])
        self.Mixed_4f = InceptionModule(528, [256, 160, 320, 32, 128, 128])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame([2, 2, 2], [2, 2, 2])
        self.Mixed_5b = InceptionModule(832, [256, 160, 320, 32, 128, 128])
        self.Mixed_5c = InceptionModule(832, [384, 192, 384, 48, 128, 128])
        self.logits = Unit3D(1024, num_classes, norm_and_relu=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c output [B, 1024, ceil(T/8), ceil(H/32), ceil(W/32)]."""
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        return self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))

    def frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per remaining time step [B, num_classes, T']."""
        x = self.features(x)
        # TF: 2x7x7 VALID average pool, which covers the whole 7x7 map of a 224x224 input; smaller
        # test inputs pool over what is there.
        x = F.avg_pool3d(x, [2, min(7, x.shape[3]), min(7, x.shape[4])], [1, 1, 1])
        return self.logits(x).mean(dim=(3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_logits(x).mean(dim=2)


def uint8_videos_to_input(videos: torch.Tensor, resize: str | None) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] -> float [B, 3, F, 224, 224] in [-1, 1] (resize=None keeps H, W)."""
    x = videos.permute(0, 4, 1, 2, 3).float()
    if resize is not None:
        x = resize_frames(x, (INPUT_SIZE, INPUT_SIZE), resize)
    return x * (2.0 / 255.0) - 1.0


class I3DFeatures(nn.Module):
    """FVD detector around our I3D: uint8 videos [B, F, H, W, 3] -> 400-d features, float32."""

    feature_dim = NUM_CLASSES
    min_frames = MIN_FRAMES

    def __init__(self, net: InceptionI3d, resize: str | None = "torch", name: str = "i3d"):
        super().__init__()
        self.net, self.resize, self.name = net.eval(), resize, name

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.net(uint8_videos_to_input(videos, self.resize)).float()


class StyleGANVI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D (`i3d_torchscript.pt`), called the way StyleGAN-V calls it:
    uint8 [B, 3, F, H, W] with rescale=True, resize=True (its own internal resize), return_features=True."""

    feature_dim = NUM_CLASSES
    min_frames = MIN_FRAMES

    def __init__(self, scripted: torch.jit.ScriptModule, name: str = "i3d_torchscript"):
        super().__init__()
        self.scripted, self.name = scripted.eval(), name

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos.permute(0, 4, 1, 2, 3).contiguous()
        return call_scripted(self.scripted, self.name, "StyleGAN-V's I3D", self.feature_dim, x, rescale=True,
                             resize=True, return_features=True).float()


def init_random_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Random weights that keep activations O(1) through the depth (He-normal convs, random
    batch-norm statistics): a fixed feature map for proxy distances and equivalence tests."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv3d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(module, nn.BatchNorm3d):
                module.weight.uniform_(0.8, 1.2, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return net


def random_i3d(seed: int = 0) -> InceptionI3d:
    """The seeded random-weight I3D behind the labelled proxy FVD (not comparable with papers)."""
    return init_random_(InceptionI3d(), torch.Generator().manual_seed(seed)).eval()
