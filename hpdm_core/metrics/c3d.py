"""C3D fine-tuned on UCF-101 (TGAN's `C3DVersion1UCF101`), the classifier behind video IS.

Input 16 frames at 112x112. Preprocessing as TGAN: RGB in [-1, 1] -> BGR x128 +128 (pixel values),
bilinear resize to 112x112 with aligned corners (chainer's `resize_images`), minus the per-pixel
Sports-1M mean clip (`mean2.npz`, centre crop [8:120, 8:120]). Pooling covers the border (chainer's
cover_all, i.e. ceil mode): pool5 maps 2x7x7 to 1x4x4, hence fc6's 512*4*4 inputs. Output: the
101-way softmax.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpdm_core.metrics.i3d import call_scripted

NUM_CLASSES = 101
NUM_FRAMES = 16
INPUT_SIZE = 112
CONV_LAYERS = (("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
               ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))
FC_LAYERS = (("fc6", 512 * 4 * 4, 4096), ("fc7", 4096, 4096), ("fc8", 4096, NUM_CLASSES))
MEAN_SHAPE = (3, NUM_FRAMES, INPUT_SIZE, INPUT_SIZE)


class C3D(nn.Module):
    """The network after preprocessing: float [B, 3, 16, 112, 112] (BGR, mean removed) -> logits."""

    def __init__(self):
        super().__init__()
        for name, c_in, c_out in CONV_LAYERS:
            setattr(self, name, nn.Conv3d(c_in, c_out, 3, padding=1))
        for name, n_in, n_out in FC_LAYERS:
            setattr(self, name, nn.Linear(n_in, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool3d(F.relu(self.conv1a(x)), (1, 2, 2), ceil_mode=True)
        x = F.max_pool3d(F.relu(self.conv2a(x)), 2, ceil_mode=True)
        x = F.max_pool3d(F.relu(self.conv3b(F.relu(self.conv3a(x)))), 2, ceil_mode=True)
        x = F.max_pool3d(F.relu(self.conv4b(F.relu(self.conv4a(x)))), 2, ceil_mode=True)
        x = F.max_pool3d(F.relu(self.conv5b(F.relu(self.conv5a(x)))), 2, ceil_mode=True)
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x))
        return self.fc8(x)


class C3DProbs(nn.Module):
    """IS classifier: uint8 RGB clips [B, 16, H, W, 3] -> class probabilities [B, 101]."""

    feature_dim = NUM_CLASSES
    min_frames = NUM_FRAMES

    def __init__(self, net: C3D, mean: torch.Tensor, name: str = "c3d"):
        super().__init__()
        if tuple(mean.shape) != MEAN_SHAPE:
            raise ValueError(f"the mean clip must be {list(MEAN_SHAPE)} (BGR), got {list(mean.shape)}")
        self.net, self.name = net.eval(), name
        self.frames, self.size = NUM_FRAMES, INPUT_SIZE
        self.register_buffer("mean", mean.float())

    def preprocess(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos[:, :self.frames].permute(0, 4, 1, 2, 3).float().flip(1)  # RGB -> BGR
        x = (x / 127.5 - 1.0) * 128.0 + 128.0  # TGAN feeds [-1, 1] and scales by 128
        if x.shape[3] != self.size or x.shape[4] != self.size:
            b, c, f, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
            frames = F.interpolate(frames, size=[self.size, self.size], mode="bilinear", align_corners=True)
            x = frames.reshape(b, f, c, self.size, self.size).permute(0, 2, 1, 3, 4)
        return x - self.mean

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(self.preprocess(videos)).softmax(dim=1).float()


class StyleGANVC3D(nn.Module):
    """StyleGAN-V's TorchScript `c3d_ucf101.pt`: uint8 [B, 3, 16, H, W] -> probabilities [B, 101]."""

    feature_dim = NUM_CLASSES
    min_frames = NUM_FRAMES

    def __init__(self, scripted: torch.jit.ScriptModule, name: str = "c3d_ucf101"):
        super().__init__()
        self.scripted, self.name = scripted.eval(), name

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos[:, :NUM_FRAMES].permute(0, 4, 1, 2, 3).contiguous()
        return call_scripted(self.scripted, self.name, "StyleGAN-V's C3D", self.feature_dim, x).float()


def crop_mean(mean) -> torch.Tensor:
    """TGAN's crop of the Sports-1M mean clip (3 x 16 x 128 x 171, BGR): rows and columns 8:120."""
    mean = torch.as_tensor(mean, dtype=torch.float32)
    if mean.ndim != 4 or mean.shape[0] != 3 or mean.shape[1] != NUM_FRAMES or min(mean.shape[2:]) < 8 + INPUT_SIZE:
        raise ValueError(f"expected a mean clip [3, 16, >=120, >=120], got {list(mean.shape)}")
    return mean[:, :, 8:8 + INPUT_SIZE, 8:8 + INPUT_SIZE].contiguous()


def chainer_to_state_dict(arrays) -> dict[str, torch.Tensor]:
    """TGAN's chainer npz (`conv1a/W`, `conv1a/b`, ..., `fc8/b`) -> our state dict. Chainer stores
    conv weights as (out, in, d, h, w) and linear weights as (out, in), the same as torch."""
    state = {}
    for name in [n for n, *_ in CONV_LAYERS] + [n for n, *_ in FC_LAYERS]:
        for chainer_key, torch_key in (("W", "weight"), ("b", "bias")):
            key = f"{name}/{chainer_key}"
            if key not in arrays:
                raise KeyError(key)
            state[f"{name}.{torch_key}"] = torch.from_numpy(arrays[key].astype("float32"))
    return state


def random_c3d(seed: int = 0) -> C3D:
    """Seeded random weights with O(1) activations (He-normal; conv1a scaled down for inputs in
    pixel units), for tests."""
    generator = torch.Generator().manual_seed(seed)
    net = C3D()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
        net.conv1a.weight /= 64.0
    return net.eval()
