"""FLOP counts: matmuls and attention (also the CPU's fused kernel) forward and backward."""

import torch
import torch.nn.functional as F

from hpdm_core.flops import count_flops, peak_flops


def test_attention_and_matmuls_are_counted_forward_and_backward():
    b, h, lq, lk, d = 2, 3, 16, 8, 4
    q = torch.randn(b, h, lq, d, requires_grad=True)
    kv = torch.randn(b, h, lk, d, requires_grad=True)
    matmul = 2 * b * h * lq * lk * d  # one [lq, d] x [d, lk]-sized product, 2 FLOPs per multiply-add
    forward = 2 * matmul  # q k^T and p v
    total, by_op = count_flops(lambda: F.scaled_dot_product_attention(q, kv, kv))
    assert total == forward and set(by_op) == {"_scaled_dot_product_flash_attention_for_cpu"}
    total, _ = count_flops(lambda: F.scaled_dot_product_attention(q, kv, kv).sum().backward())
    assert total == forward + 5 * matmul  # backward: the scores again, dv, dp, dq and dk

    linear = torch.nn.Linear(5, 7)
    x = torch.randn(11, 5, requires_grad=True)
    total, _ = count_flops(lambda: linear(x).sum().backward())
    assert total == 3 * (2 * 11 * 5 * 7)  # forward, grad of the input, grad of the weight


def test_grid_sample_is_not_counted():
    volume, grid = torch.randn(1, 4, 2, 3, 3), torch.rand(1, 2, 3, 3, 3) * 2 - 1
    assert count_flops(lambda: F.grid_sample(volume, grid, align_corners=False))[0] == 0


def test_peak_flops_is_a_rate():
    rate, what = peak_flops("cpu", size=64, repeats=2)
    assert rate > 0 and "float32" in what
