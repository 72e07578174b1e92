import pytest
import torch

from ssgd.models import MODELS, build_model


@pytest.mark.parametrize("name,shape", [("lenet", (1, 28, 28)), ("mlp", (1, 28, 28)), ("convnet", (1, 28, 28)),
                                        ("resnet18", (3, 32, 32)), ("lenet", (3, 32, 32)), ("mlp", (1, 8, 8))])
def test_models_give_logits_and_seeded_init(name, shape):
    m1 = build_model(name, shape, 10, seed=3)
    m2 = build_model(name, shape, 10, seed=3)
    m3 = build_model(name, shape, 10, seed=4)
    m1.eval()
    assert m1(torch.rand(2, *shape)).shape == (2, 10)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(m1.parameters(), m3.parameters()))


def test_lenet_is_dlgs_model():
    m = build_model("lenet", (1, 28, 28), 10)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(c.out_channels == 12 and c.kernel_size == (5, 5) for c in convs)
    assert any(isinstance(x, torch.nn.Sigmoid) for x in m.modules())


def test_unknown_model_and_bad_width():
    assert {"lenet", "mlp", "convnet", "resnet18"} <= set(MODELS)
    with pytest.raises(ValueError, match="Unknown model 'vgg'"):
        build_model("vgg", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="width=0"):
        build_model("convnet", (1, 28, 28), 10, width=0)


@pytest.mark.parametrize("padding,sides", [(2, (13, 12, 5, 4)), (3, (14, 13, 5, 4))])
def test_tanh_cnn_is_the_dp_benchmark_model(padding, sides):
    """Papernot et al. 2020 / Tramèr & Boneh 2021: conv16 8x8/2 - tanh - pool 2/1 - conv32 4x4/2 - tanh -
    pool 2/1 - fc32 - tanh - fc10, 26,010 parameters, no BatchNorm."""
    m = build_model("tanh-cnn", (1, 28, 28), 10, seed=0, padding=padding)
    assert sum(p.numel() for p in m.parameters()) == 26010
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(16, (8, 8), (2, 2)), (32, (4, 4), (2, 2))]
    assert sum(isinstance(x, torch.nn.Tanh) for x in m.modules()) == 3
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    x = torch.rand(2, 1, 28, 28)
    got = []
    for layer in m.features:
        x = layer(x)
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            got.append(x.shape[-1])
    assert tuple(got) == sides and m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="padding=1"):
        build_model("tanh-cnn", (1, 28, 28), 10, padding=1)


def test_scatter_linear_is_tramer_boneh_model():
    """GroupNorm(27 groups, no affine) on 81x7x7 ScatterNet features, then one linear layer: 39,700 parameters."""
    m = build_model("scatter-linear", (81, 7, 7), 10, seed=0)
    assert sum(p.numel() for p in m.parameters()) == 81 * 49 * 10 + 10
    norms = [x for x in m.modules() if isinstance(x, torch.nn.GroupNorm)]
    assert len(norms) == 1 and norms[0].num_groups == 27 and not norms[0].affine
    assert not [b for b in m.buffers()]  # no running statistics: nothing is learnt from the data set


def test_scatter_linear_normalisation_is_per_example():
    m = build_model("scatter-linear", (9, 2, 2), 3, seed=0, groups=3)
    x = torch.randn(5, 9, 2, 2)
    out = m(x)
    # an example's output depends on that example alone (no batch statistics) ...
    assert torch.allclose(m(x[2:3]), out[2:3], atol=1e-6)
    # ... and is invariant to an affine change of one group of its features (that group's own statistics)
    y = x.clone()
    y[2, 3:6] = 7.0 * y[2, 3:6] + 2.0
    assert torch.allclose(m(y), out, atol=1e-4)
    # without normalisation that change does matter
    raw = build_model("scatter-linear", (9, 2, 2), 3, seed=0, groups=0)
    assert not torch.allclose(raw(y)[2], raw(x)[2], atol=1e-2)


def test_scatter_linear_groups_must_divide_channels():
    with pytest.raises(ValueError, match="groups=4.*81 feature channels.*27"):
        build_model("scatter-linear", (81, 7, 7), 10, groups=4)
    with pytest.raises(ValueError, match="groups=-1"):
        build_model("scatter-linear", (81, 7, 7), 10, groups=-1)
