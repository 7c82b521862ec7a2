"""M2PN: memory-orchestrated multi-prompt infrared-visible image fusion
(SEED_METHODS.md section 3.1; the sizes the paper leaves out filled in there).

Registered IR and the visible luminance Y, both (B, 1, H, W) in [0, 1], become one fused
luminance; the visible chroma is restored outside (`fusion.color`). It is a network of its
own: it does not touch the perception backbone.

    Phi_ir, Phi_vi = DenseEncoder(IR), DenseEncoder(Y)      (siamese)
    Phi_M = ResidualEncoder(IR - Y);  Phi_f = conv([Phi_ir, Phi_vi])
    Theta_k = MLP_k(GAP(Phi_k))                             node embeddings
    G_ir, G_vi = graph_ir(Theta_ir, Theta_f, Theta_M), graph_vi(...)   (CSGN, eq. 1)
    Theta_q = memory.retrieve(Theta_f)                      (DMB, eq. 2)
    3 x: Theta_p = MGF(Theta_q, G_ir, G_vi) (eqs. 7-8);  Phi = PGM(Phi, Theta_p) (eq. 6)
    fused = tanh(conv(Phi))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class M2PNConfig:
    """Sizes of the fusion network: D = 184 gives 963,017 parameters (the paper: 0.97M)."""

    dim: int = 184
    heads: int = 4
    memory_slots: int = 100
    memory_momentum: float = 0.1
    quality_kappa: float = 0.5
    quality_window: int = 1024
    siamese: bool = True


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class DenseEncoder(nn.Module):
    """CS2Fusion's dense encoder: four 3x3 convs (1->16, 16->16, 32->16, 48->16), each
    reading the concatenation of the previous outputs; ReLU; output [E4, E3, E2, E1]."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_conv(1, 16), _conv(16, 16), _conv(32, 16), _conv(48, 16)])

    def forward(self, x: Tensor) -> Tensor:
        outputs = [torch.relu(self.convs[0](x))]
        for conv in self.convs[1:]:
            outputs.insert(0, torch.relu(conv(torch.cat(outputs, dim=1))))
        return torch.cat(outputs, dim=1)  # (B, 64, H, W)


class NodeEmbedding(nn.Module):
    """Theta = MLP(GAP(Phi)): Linear(64 -> D), GELU, Linear(D -> D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(64, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(features.mean((2, 3)))


class ModalityGraph(nn.Module):
    """CSGN (eq. 1): one graph-attention layer over the nodes [Theta_m, Theta_f, Theta_M];
    per head the score of edge i->j is [Q_i || K_j] . w / sqrt(d); heads concatenated,
    projected, residual and LayerNorm; the output is the modality node G_m (B, D)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.score = nn.Parameter(torch.randn(heads, 2, dim // heads) * (dim // heads) ** -0.5)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, nodes: Tensor) -> Tensor:
        """nodes (B, 3, D) -> G_m (B, D)."""
        batch, count, dim = nodes.shape
        split = (batch, count, self.heads, dim // self.heads)
        q, k, v = (layer(nodes).view(split) for layer in (self.query, self.key, self.value))
        score = (torch.einsum("bihd,hd->bhi", q, self.score[:, 0])[..., :, None]
                 + torch.einsum("bjhd,hd->bhj", k, self.score[:, 1])[..., None, :])
        attention = torch.softmax(score / math.sqrt(dim // self.heads), dim=-1)  # (B, h, i, j)
        mixed = torch.einsum("bhij,bjhd->bihd", attention, v).reshape(batch, count, dim)
        return self.norm(nodes + self.out(mixed))[:, 0]


class MemoryBank(nn.Module):
    """DMB (eqs. 2-5): N slots of experience. ``retrieve`` mixes the slots by the softmax of
    their cosine similarity to Theta_f; ``update`` (training only, no gradient) moves the
    most similar slot towards Theta_f by ``momentum`` for every sample whose quality score
    exceeds mean + kappa * std of the recent scores. Slots are saved with the model."""

    def __init__(self, slots: int, dim: int, momentum: float, kappa: float, window: int) -> None:
        super().__init__()
        self.register_buffer("slots", F.normalize(torch.randn(slots, dim), dim=-1))
        self.register_buffer("history", torch.empty(0), persistent=False)
        self.momentum, self.kappa, self.window = momentum, kappa, window

    def similarity(self, theta_f: Tensor) -> Tensor:
        return F.normalize(theta_f, dim=-1) @ F.normalize(self.slots, dim=-1).T  # (B, N)

    def retrieve(self, theta_f: Tensor) -> Tensor:
        """Theta_q (B, D): a convex combination of the slots."""
        return torch.softmax(self.similarity(theta_f), dim=-1) @ self.slots

    def threshold(self) -> float:
        """tau = mean + kappa * std of the recent scores (-inf before any)."""
        if self.history.numel() < 2:
            return float("-inf")
        return float(self.history.mean() + self.kappa * self.history.std())

    @torch.no_grad()
    def update(self, theta_f: Tensor, quality: Tensor) -> Tensor:
        """Write the accepted samples (B,) bool, returned; then record their scores."""
        accepted = quality > self.threshold()
        nearest = self.similarity(theta_f).argmax(dim=-1)
        for index in accepted.nonzero().flatten().tolist():
            slot = nearest[index]
            self.slots[slot] = ((1 - self.momentum) * self.slots[slot]
                                + self.momentum * theta_f[index].detach())
        self.history = torch.cat([self.history.to(quality), quality.detach()])[-self.window:]
        return accepted


class MemoryGuidedFusion(nn.Module):
    """MGF (eqs. 7-8): the experiential prompt attends to the two modality nodes; per head
    alpha (over IR, VIS) sums to 1; Theta_p = alpha V (B, D)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))

    def forward(self, theta_q: Tensor, g_ir: Tensor, g_vi: Tensor) -> tuple[Tensor, Tensor]:
        """-> (Theta_p (B, D), alpha (B, heads, 2): the IR and VIS weights per head)."""
        batch, dim = theta_q.shape
        d = dim // self.heads
        q = self.query(theta_q).view(batch, self.heads, d)
        nodes = torch.stack([g_ir, g_vi], dim=1)  # (B, 2, D)
        k = self.key(nodes).view(batch, 2, self.heads, d)
        v = self.value(nodes).view(batch, 2, self.heads, d)
        alpha = torch.softmax(torch.einsum("bhd,bnhd->bhn", q, k) / math.sqrt(d), dim=-1)
        return torch.einsum("bhn,bnhd->bhd", alpha, v).reshape(batch, dim), alpha


class PromptGuidedModulation(nn.Module):
    """PGM (eq. 6): Phi <- act(conv3(Phi)); [gamma, b] = Linear(Theta_p);
    out = ((1 + gamma) * IN(Phi) + b) + Phi."""

    def __init__(self, in_channels: int, out_channels: int, dim: int) -> None:
        super().__init__()
        self.conv = _conv(in_channels, out_channels)
        self.affine = nn.Linear(dim, 2 * out_channels)

    def forward(self, features: Tensor, prompt: Tensor) -> Tensor:
        features = F.leaky_relu(self.conv(features), 0.2)
        gamma, beta = self.affine(prompt)[..., None, None].chunk(2, dim=1)
        return (1 + gamma) * F.instance_norm(features) + beta + features


class FusionOutput(NamedTuple):
    """fused (B, 1, H, W) (tanh; clamp to [0, 1] for display); theta: the node embeddings
    (ir, vi, f, M) (B, D) each; graphs: G_ir, G_vi; alpha_ir: mean IR weight of the MGFs."""

    fused: Tensor
    theta: tuple[Tensor, Tensor, Tensor, Tensor]
    graphs: tuple[Tensor, Tensor]
    alpha_ir: Tensor


class M2PN(nn.Module):
    def __init__(self, config: M2PNConfig | None = None) -> None:
        super().__init__()
        config = config or M2PNConfig()
        self.config = config
        self.encoder_ir = DenseEncoder()
        self.encoder_vi = self.encoder_ir if config.siamese else DenseEncoder()
        self.residual = nn.Sequential(_conv(1, 16), nn.LeakyReLU(0.2), _conv(16, 64),
                                      nn.LeakyReLU(0.2))
        self.fuse = _conv(128, 64)
        self.nodes = nn.ModuleDict({k: NodeEmbedding(config.dim) for k in ("ir", "vi", "f", "m")})
        self.graph_ir = ModalityGraph(config.dim, config.heads)
        self.graph_vi = ModalityGraph(config.dim, config.heads)
        self.memory = MemoryBank(config.memory_slots, config.dim, config.memory_momentum,
                                 config.quality_kappa, config.quality_window)
        self.mgf = nn.ModuleList(MemoryGuidedFusion(config.dim, config.heads) for _ in range(3))
        self.pgm = nn.ModuleList(PromptGuidedModulation(a, b, config.dim)
                                 for a, b in ((64, 64), (64, 32), (32, 16)))
        self.out = _conv(16, 1)

    def forward(self, ir: Tensor, visible: Tensor) -> FusionOutput:
        """ir, visible (luminance): (B, 1, H, W) in [0, 1]."""
        phi_ir, phi_vi = self.encoder_ir(ir), self.encoder_vi(visible)
        phi_m = self.residual(ir - visible)
        phi_f = torch.relu(self.fuse(torch.cat([phi_ir, phi_vi], dim=1)))
        theta = tuple(self.nodes[k](phi) for k, phi in
                      (("ir", phi_ir), ("vi", phi_vi), ("f", phi_f), ("m", phi_m)))
        theta_ir, theta_vi, theta_f, theta_m = theta
        g_ir = self.graph_ir(torch.stack([theta_ir, theta_f, theta_m], dim=1))
        g_vi = self.graph_vi(torch.stack([theta_vi, theta_f, theta_m], dim=1))
        theta_q = self.memory.retrieve(theta_f)
        features, alphas = phi_f, []
        for mgf, pgm in zip(self.mgf, self.pgm, strict=True):
            prompt, alpha = mgf(theta_q, g_ir, g_vi)
            features = pgm(features, prompt)
            alphas.append(alpha[..., 0].mean())
        return FusionOutput(torch.tanh(self.out(features)), theta, (g_ir, g_vi),
                            torch.stack(alphas).mean())
