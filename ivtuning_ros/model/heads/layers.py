"""Small layers shared by the heads: MLP and the transformer feed-forward block."""
from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's box MLP, DINO's ref_point_head).

    ``layers`` holds the Linear modules only, so ``layers.{i}`` keys match DETR-family
    checkpoints.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:],
                                                                     strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = x.relu()
        return x


class FeedForward(nn.Module):
    """x + linear2(dropout(relu(linear1(x)))): the transformer FFN with its residual."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.linear2(self.dropout(self.linear1(x).relu())))
