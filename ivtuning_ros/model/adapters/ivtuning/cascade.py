"""The IV-tuning prompt stream through one transformer layer (paper Fig. 4, eq. 1).

In every layer l that carries an MP-beta, the same MP-beta (shared weights) runs after
the attention residual and after the FFN residual, both times on the previous layer's
prompt P^{l-1}; the second call's output is P^l, the prompt of layer l+1 (the stream
cascades: Fig. 4, the text after eq. 1, sec. III-B):

    x = x + Attn(LN(x));  x = x + MP-beta(x, P^{l-1})
    x = x + FFN(LN(x));   P^l = MP-beta(x, P^{l-1});  x = x + P^l

Both calls read the same P^{l-1}, so the infrared term s4(M_P) is computed once per
layer (`PrompterBeta.bind_prompt`). The Swin and the plain ViTs run this one function;
each supplies its layer's two residuals and where its patch tokens sit.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .prompter import PrompterBeta

Residual = Callable[[Tensor], Tensor]


def prompted_layer(attention: Residual, mlp: Residual, x: Tensor, beta: PrompterBeta | None,
                   prompt: Tensor | None, grid: Residual = lambda x: x,
                   add: Callable[[Tensor, Tensor], Tensor] | None = None,
                   ) -> tuple[Tensor, Tensor | None]:
    """One layer with MP-beta after each residual; returns (tokens, P^l).

    Args:
        attention, mlp: the frozen layer's two residual branches, tokens -> tokens.
        x: the layer's input tokens.
        beta: the layer's MP-beta, or None (then the prompt passes through unchanged).
        prompt: P^{l-1} as a (B, H, W, C) grid.
        grid: tokens -> their (B, H, W, C) patch grid (the identity for grid tokens).
        add: (tokens, P) -> tokens + P on the patch tokens; `add_prompt` by default.
    """
    add = add or add_prompt
    x = attention(x)
    if beta is None:
        return mlp(x), prompt
    beta_of = beta.bind_prompt(prompt)
    x = add(x, beta_of(grid(x)))
    x = mlp(x)
    prompt = beta_of(grid(x))  # P^l (eq. 7)
    return add(x, prompt), prompt


def add_prompt(x: Tensor, prompt: Tensor) -> Tensor:
    """x + prompt, both (B, H, W, C), for an ``x`` the caller computed itself.

    Without autograd, x's own storage takes the sum: on CPU a fresh tensor of this
    size costs more in first-touch page faults than the addition. With autograd the
    sum is a new tensor, because the prompter's LayerNorm saved x for its backward.
    """
    return x + prompt if torch.is_grad_enabled() else x.add_(prompt)
