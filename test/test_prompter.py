"""The prompter's fast paths are exact rewrites: each identity against the plain formulation
(the paper's modules applied one after another), in eval and train mode; the eval weights'
cache follows every change of weights and mode; the state dict keeps its layout."""
import pytest
import torch
import torch.nn.functional as F

from ivtuning_ros.model.adapters.ivtuning.prompter import (
    PrompterAlpha,
    PrompterBeta,
    ScaledLayerNorm,
    SplitFuseEnhancer,
    batch_norm_into_linear,
    compose_linear,
    enhance_folded,
    residual_into_centre_tap,
)

from .conftest import randomize_trainable

DIM, HIDDEN = 24, 16


def plain_norm(norm: ScaledLayerNorm, z):
    """Eqs. 2-3 as written: LN(z) * omega + phi."""
    return norm.norm(z) * norm.omega + norm.phi


def plain_enhancer(enhancer: SplitFuseEnhancer, m):
    """Fig. 5 as drawn: to a map; depthwise 3x3 + residual on the split channels; concat
    with the rest; 1x1 conv -> BatchNorm -> ReLU -> 1x1 conv; back to tokens."""
    x = m.permute(0, 3, 1, 2).contiguous()
    if enhancer.local is not None:
        selected, rest = x[:, : enhancer.split], x[:, enhancer.split :]
        x = torch.cat([selected + enhancer.local(selected), rest], dim=1)
    return enhancer.fuse(x).permute(0, 2, 3, 1)


def plain_visible(prompter, z_vis):
    return plain_enhancer(prompter.enhancer, prompter.s1(plain_norm(prompter.norm_vis, z_vis)))


def plain_prompt_latent(prompter, z_prompt):
    return prompter.s2(plain_norm(prompter.norm_prompt, z_prompt))


def plain_beta(beta: PrompterBeta, z_vis, z_prompt):
    """Eq. 7: P = s3(M_vis^e) + s4(M_P)."""
    return beta.s3(plain_visible(beta, z_vis)) + beta.s4(plain_prompt_latent(beta, z_prompt))


def plain_alpha(alpha: PrompterAlpha, z_vis, z_prompt):
    """Eq. 6: P^0 = s3(M_vis^e + M_P)."""
    latent = plain_visible(alpha, z_vis)
    if z_prompt is not None:
        latent = latent + plain_prompt_latent(alpha, z_prompt)
    return alpha.s3(latent)


def tokens(batch=2, height=9, width=11, dim=DIM, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, height, width, dim, generator=generator)


def beta_module(split_ratio=0.25, seed=1):
    torch.manual_seed(0)
    beta = PrompterBeta(DIM, HIDDEN, split_ratio)
    randomize_trainable(beta, seed)
    return beta.eval()


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def assert_same_gradients(fast, plain):
    """Equal within fp32 rounding of the largest gradient (the bias before BatchNorm has a
    true gradient of zero: both sides hold rounding noise there)."""
    scale = max(p.grad.abs().max() for p in plain.parameters())
    for (name, a), b in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_scaled_layer_norm_is_one_layer_norm_with_the_folded_affine():
    norm = ScaledLayerNorm(DIM)
    randomize_trainable(norm)
    z = tokens().requires_grad_()
    fast = norm(z)
    plain = plain_norm(norm, z.detach().clone().requires_grad_())
    assert_close(fast, plain)
    grads = torch.autograd.grad(fast.square().sum(), [z, *norm.parameters()])
    plain_z = z.detach().clone().requires_grad_()
    plain_grads = torch.autograd.grad(plain_norm(norm, plain_z).square().sum(),
                                      [plain_z, *norm.parameters()])
    for a, b in zip(grads, plain_grads, strict=True):
        assert_close(a, b)


def test_batch_norm_folds_into_the_preceding_linear():
    beta = beta_module()
    conv, batch_norm = beta.enhancer.fuse[0], beta.enhancer.fuse[1]
    x = tokens(dim=HIDDEN)
    weight, bias = batch_norm_into_linear(conv.weight.flatten(1), conv.bias, batch_norm)
    plain = batch_norm(conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    assert_close(F.linear(x, weight, bias), plain)


def test_residual_folds_into_the_depthwise_centre_tap():
    local = beta_module().enhancer.local
    a = tokens(dim=local.in_channels).permute(0, 3, 1, 2)
    weight, bias = residual_into_centre_tap(local)
    folded = F.conv2d(a, weight, bias, padding=1, groups=local.in_channels)
    assert_close(folded, a + local(a))
    assert not torch.equal(weight, local.weight), "the module's own weight stays untouched"


def test_two_linear_maps_compose_into_one():
    beta = beta_module()
    conv2 = beta.enhancer.fuse[3]
    x = tokens(dim=HIDDEN)
    weight, bias = compose_linear(beta.s3.weight, beta.s3.bias, conv2.weight.flatten(1),
                                  conv2.bias)
    assert_close(F.linear(x, weight, bias), beta.s3(F.linear(x, conv2.weight.flatten(1),
                                                             conv2.bias)))


@pytest.mark.parametrize("split_ratio", [0.0, 0.25, 1.0])
def test_eval_enhancer_path_equals_fig5(split_ratio):
    enhancer = beta_module(split_ratio).enhancer
    m = tokens(dim=HIDDEN)
    conv2 = enhancer.fuse[3]
    with torch.no_grad():
        hidden = enhance_folded(m.clone(), enhancer.eval_weights())
        assert_close(F.linear(hidden, conv2.weight.flatten(1), conv2.bias),
                     plain_enhancer(enhancer, m))


@pytest.mark.parametrize("split_ratio", [0.0, 0.25, 1.0])
def test_token_enhancer_equals_fig5_in_train_mode(split_ratio):
    """The module path (1x1 convs as linear layers, one cat on the channel axis) gives the
    same output, the same gradients and the same BatchNorm running statistics."""
    fast, plain = beta_module(split_ratio).enhancer, beta_module(split_ratio).enhancer
    fast.train(), plain.train()
    m = tokens(dim=HIDDEN)
    out_fast, out_plain = fast(m), plain_enhancer(plain, m)
    assert_close(out_fast, out_plain)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    assert_same_gradients(fast, plain)
    for (name, a), b in zip(fast.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("split_ratio", [0.0, 0.25, 1.0])
def test_eval_path_of_mp_beta_equals_eq7(split_ratio):
    beta = beta_module(split_ratio)
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    with torch.no_grad():
        assert beta.uses_eval_path()
        assert_close(beta(z_vis, z_prompt), plain_beta(beta, z_vis, z_prompt))
        bound = beta.bind_prompt(z_prompt)
        for z in (z_vis, z_vis * 2 - 1):  # one bound prompt, two visible inputs
            assert_close(bound(z), plain_beta(beta, z, z_prompt))


def test_eval_mode_with_gradients_takes_the_module_path():
    """Cached weights carry no autograd history: with gradients on, MP-beta runs its
    modules, so gradients reach every weight."""
    beta = beta_module()
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    assert not beta.uses_eval_path()
    out = beta(z_vis, z_prompt)
    assert_close(out, plain_beta(beta, z_vis, z_prompt))
    out.square().sum().backward()
    assert all(p.grad is not None for p in beta.parameters())


def test_mp_beta_in_train_mode_equals_eq7_and_trains_the_same():
    fast, plain = beta_module(), beta_module()
    fast.train(), plain.train()
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    out_fast, out_plain = fast(z_vis, z_prompt), plain_beta(plain, z_vis, z_prompt)
    assert_close(out_fast, out_plain)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    assert_same_gradients(fast, plain)


@pytest.mark.parametrize("with_ir", [True, False])
@pytest.mark.parametrize("train_mode", [False, True])
def test_mp_alpha_equals_eq6(with_ir, train_mode):
    torch.manual_seed(0)
    alpha = PrompterAlpha(DIM, 8, 0.25)
    randomize_trainable(alpha)
    alpha.train(train_mode)
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3) if with_ir else None
    with torch.no_grad():
        assert_close(alpha(z_vis, z_prompt), plain_alpha(alpha, z_vis, z_prompt))


def fresh_output(beta, z_vis, z_prompt):
    with torch.no_grad():
        return beta(z_vis, z_prompt), plain_beta(beta, z_vis, z_prompt)


def test_eval_weights_follow_in_place_weight_changes():
    beta = beta_module()
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    before, _ = fresh_output(beta, z_vis, z_prompt)
    with torch.no_grad():
        beta.enhancer.fuse[0].weight.mul_(2.0)
        beta.s4.bias.add_(1.0)
    after, plain = fresh_output(beta, z_vis, z_prompt)
    assert not torch.allclose(before, after)
    assert_close(after, plain)


def test_eval_weights_follow_load_state_dict():
    beta, other = beta_module(seed=1), beta_module(seed=5)
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    fresh_output(beta, z_vis, z_prompt)
    beta.load_state_dict(other.state_dict())
    ours, _ = fresh_output(beta, z_vis, z_prompt)
    assert_close(ours, fresh_output(other, z_vis, z_prompt)[1])


def test_eval_weights_follow_batch_norm_statistics_learned_in_train_mode():
    """Train mode updates BatchNorm's running statistics without a version bump;
    ``train()`` drops the cache so the next eval call folds the new statistics."""
    beta = beta_module()
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    before, _ = fresh_output(beta, z_vis, z_prompt)
    beta.train()
    with torch.no_grad():
        beta(z_vis * 3 + 1, z_prompt)
    beta.eval()
    after, plain = fresh_output(beta, z_vis, z_prompt)
    assert not torch.allclose(before, after)
    assert_close(after, plain)


def test_state_dict_layout_is_unchanged_by_the_eval_path():
    beta = beta_module()
    keys = list(beta.state_dict())
    fresh_output(beta, tokens(seed=2), tokens(seed=3))
    assert list(beta.state_dict()) == keys
    assert "enhancer.fuse.1.running_var" in keys and "s4.weight" in keys
    assert not any("cache" in key for key in keys)


def test_eval_path_under_inference_mode_and_cpu_autocast():
    beta = beta_module()
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    with torch.inference_mode():
        assert_close(beta(z_vis, z_prompt), plain_beta(beta, z_vis, z_prompt))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = beta(z_vis, z_prompt).float()
            plain = plain_beta(beta, z_vis, z_prompt).float()
    torch.testing.assert_close(fast, plain, rtol=0.05, atol=0.05)


def test_eval_weights_follow_a_dtype_change():
    beta = beta_module()
    z_vis, z_prompt = tokens(seed=2), tokens(seed=3)
    fresh_output(beta, z_vis, z_prompt)
    beta.double()
    ours, plain = fresh_output(beta, z_vis.double(), z_prompt.double())
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, plain)
