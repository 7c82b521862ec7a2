"""M2PN's unsupervised losses (SEED_METHODS.md section 3.2, eqs. 9-17, with its fixes):
saliency-weighted intensity, structure (SSIM loss, gradients) and the graph contrast.
Images are (B, 1, H, W) in [0, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.image_fusion.m2pn import FusionOutput

EPS = 1e-6


def _standardise(x: Tensor) -> Tensor:
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) / (x.std((1, 2, 3), keepdim=True) + EPS)


def infrared_saliency(ir: Tensor) -> Tensor:
    """S_ir = sigmoid(IR^ + C(IR)) * sigmoid(IR^) (eq. 11): IR^ standardised per image,
    C the local contrast IR - AvgPool7(IR) (reflect padding)."""
    contrast = ir - F.avg_pool2d(F.pad(ir, (3, 3, 3, 3), mode="reflect"), 7, stride=1)
    standard = _standardise(ir)
    return torch.sigmoid(standard + contrast) * torch.sigmoid(standard)


def residual_prior(ir: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """p_R = sigmoid(IR - VIS) and lambda_c = sigmoid(H_R) per image (eq. 12), H_R the mean
    binary entropy of p_R: lambda_c lies in [0.5, 2/3]."""
    p = torch.sigmoid(ir - visible)
    entropy = -(p * torch.log(p + EPS) + (1 - p) * torch.log(1 - p + EPS)).mean((1, 2, 3))
    return p, torch.sigmoid(entropy).view(-1, 1, 1, 1)


def intensity_weights(ir: Tensor, visible: Tensor, k: float = 1.0) -> tuple[Tensor, Tensor]:
    """(w_ir, w_vi) (eqs. 13-14): IR where E_ir - E_vi < k * std(E_ir - E_vi) per image."""
    saliency = infrared_saliency(ir)
    p, lam = residual_prior(ir, visible)
    e_ir = -(saliency + lam * p * saliency)
    e_vi = -((1 - saliency) + lam * p * (1 - saliency))
    difference = e_ir - e_vi
    w_ir = (difference < k * difference.std((1, 2, 3), keepdim=True)).to(ir.dtype)
    return w_ir, 1 - w_ir


def _ssim_map(x: Tensor, y: Tensor, window: int = 3, sigma: float = 1.5) -> Tensor:
    """SSIM with a Gaussian window (kornia's SSIMLoss(3) convention), data range 1."""
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, window, window)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(F.pad(image, [window // 2] * 4, mode="reflect"), kernel)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1)
                                                      * (var_x + var_y + c2))


def ssim_loss(x: Tensor, y: Tensor) -> Tensor:
    """(1 - SSIM) / 2: minimising it raises the similarity (the paper's 'SSIM(.)')."""
    return ((1 - _ssim_map(x, y)) / 2).mean()


def sobel_magnitude(x: Tensor) -> Tensor:
    """|G_x| + |G_y| of a (B, 1, H, W) image."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype, device=x.device)
    kernel = torch.stack([kx, kx.T])[:, None]
    gradients = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return gradients.abs().sum(1, keepdim=True)


def fusion_loss(fused: Tensor, ir: Tensor, visible: Tensor, k: float = 1.0,
                structure_weight: float = 15.0) -> dict[str, Tensor]:
    """L_f = L_w + lambda L_s (eqs. 10, 15, 16)."""
    w_ir, w_vi = intensity_weights(ir, visible, k)
    intensity = (w_ir * (ir - fused)).abs().mean() + (w_vi * (visible - fused)).abs().mean()
    gradient = (sobel_magnitude(fused)
                - torch.maximum(sobel_magnitude(ir), sobel_magnitude(visible))).abs().mean()
    structure = ssim_loss(fused, ir) + ssim_loss(fused, visible) + gradient
    return {"intensity": intensity, "structure": structure,
            "fusion": intensity + structure_weight * structure}


def _similarities(a: Tensor, b: Tensor) -> Tensor:
    return (F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T).clamp(5e-4, 0.9995)


def similarity_min(a: Tensor, b: Tensor) -> Tensor:
    """L_min = mean(-log(1 - S)): pushes the two sets apart."""
    return -torch.log(1 - _similarities(a, b)).mean()


def similarity_max(a: Tensor, b: Tensor) -> Tensor:
    """L_max = mean(-log(S) exp(-0.25 (rank - 1))), rank within each row, descending."""
    similarity = _similarities(a, b)
    rank = similarity.argsort(dim=1, descending=True).argsort(dim=1).to(similarity.dtype)
    return (-torch.log(similarity) * torch.exp(-0.25 * rank)).mean()


def contrast_loss(output: FusionOutput) -> Tensor:
    """L_ctr (eq. 17), the modality features F_m taken as the node embeddings Theta_m."""
    theta_ir, theta_vi, _, _ = output.theta
    g_ir, g_vi = output.graphs
    return (similarity_min(g_ir, g_vi) + similarity_min(g_ir, theta_vi)
            + similarity_min(g_vi, theta_ir) + similarity_max(g_ir, theta_ir)
            + similarity_max(g_vi, theta_vi))
