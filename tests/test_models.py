"""Model zoo: forward/backward of every model, exact parameter counts, attention layers, weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skinlib.efficiency import count_flops, count_parameters, parameter_audit
from skinlib.models import create_model, list_models
from skinlib.models.attention import (
    ATTENTIONS,
    CaCo,
    CoordAttention,
    coord_attention_parameters,
    create_attention,
    literal_caco,
    literal_coord_attention,
)
from skinlib.models.weights import expected_weights_file, load_pretrained

PAPER_MODELS = ["resnet18", "shufflenet_v2_x2_0", "ghostnetv2_100", "efficientnet_b0", "mobilenet_v3_small",
                "mobilenet_v3_small_caco"]
# pinned once, with torchvision 0.29 / timm 1.0 (7-class heads)
EXACT_PARAMS = {
    "resnet18": 11_180_103,
    "shufflenet_v2_x2_0": 5_359_339,
    "efficientnet_b0": 4_016_515,
    "mobilenet_v3_small": 1_525_031,
    "ghostnetv2_100": 4_884_875,
}


def test_registry_lists_the_paper_models_and_refuses_unknown_names():
    assert set(PAPER_MODELS) <= set(list_models())
    with pytest.raises(ValueError, match=r"valid: .*mobilenet_v3_small"):
        create_model("mobilenetv3")
    with pytest.raises(ValueError, match="valid: none, se, ca, eca, cbam, caco"):
        create_model("mobilenet_v3_small", attention="sk")


@pytest.mark.parametrize("name", PAPER_MODELS + [f"mobilenet_v3_small:{a}" for a in ATTENTIONS])
def test_forward_and_one_training_step(name):
    base, _, attention = name.partition(":")
    torch.manual_seed(0)
    model = create_model(base, **({"attention": attention} if attention else {}))
    for size in (224, 64):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 3]))
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_exact_parameter_counts(name):
    assert count_parameters(create_model(name)) == EXACT_PARAMS[name]


def test_caco_adds_a_little_and_ca_alone_removes():
    base = count_parameters(create_model("mobilenet_v3_small"))
    caco = count_parameters(create_model("mobilenet_v3_small_caco"))
    assert 50_000 < caco - base < 200_000
    assert count_parameters(create_model("mobilenet_v3_small", attention="ca")) < base
    assert count_parameters(create_model("mobilenet_v3_small", attention="none")) < base


@pytest.mark.parametrize("channels", [16, 72, 96, 288, 576])
def test_coordinate_attention_parameter_formula(channels):
    layer = CoordAttention(channels)
    assert count_parameters(layer) == coord_attention_parameters(channels)
    x = torch.randn(2, channels, 7, 5)
    assert layer(x).shape == x.shape


def test_coordinate_attention_hand_computed():
    """C=1, mip=8: conv1 averages, BN is identity (eval, fresh stats), then hand-set gates."""
    layer = CoordAttention(1, reduction=32, min_mip=8).eval()
    with torch.no_grad():
        layer.conv1.weight.fill_(0)
        layer.conv1.weight[0, 0] = 1.0  # first mip channel carries the pooled value
        layer.conv1.bias.zero_()
        for conv in (layer.conv_h, layer.conv_w):
            conv.weight.zero_()
            conv.weight[0, 0] = 1.0
            conv.bias.zero_()
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # rows mean 2, 6; columns mean 3, 5
    eps = layer.bn1.eps
    hswish = nn.functional.hardswish

    def gate(v):
        return torch.sigmoid(hswish(torch.tensor(v) / (1 + eps) ** 0.5))

    a_h = torch.stack([gate(2.0), gate(6.0)]).view(1, 1, 2, 1)
    a_w = torch.stack([gate(3.0), gate(5.0)]).view(1, 1, 1, 2)
    torch.testing.assert_close(layer(x), x * a_h * a_w)


@pytest.mark.parametrize("kind", ["ca", "caco"])
@pytest.mark.parametrize("shape", [(3, 48, 7, 5), (2, 16, 56, 56), (2, 24, 40, 33)])  # matmul and reduction paths
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_attention_equals_the_literal_definition(kind, shape, channels_last):
    """Outputs, input and parameter gradients and BatchNorm running statistics agree to 1e-5."""
    torch.manual_seed(0)
    fast = create_attention(kind, shape[1])
    literal = create_attention(kind, shape[1])
    literal.load_state_dict(fast.state_dict())
    reference = literal_caco if kind == "caco" else literal_coord_attention
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_ref = fast(x_fast), reference(literal, x_ref)  # training mode: batch statistics
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out_ref)
    (out_fast * weights).sum().backward()
    (out_ref * weights).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    for (name, p_fast), p_ref in zip(fast.named_parameters(), literal.parameters()):
        if name.endswith("conv1.bias"):  # feeds a training-mode BatchNorm: zero up to rounding in both
            assert p_fast.grad.abs().max() < 1e-3 and p_ref.grad.abs().max() < 1e-3
        else:
            torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, b_fast), b_ref in zip(fast.named_buffers(), literal.buffers()):
        torch.testing.assert_close(b_fast, b_ref, rtol=1e-5, atol=1e-6, msg=name)
    fast.eval(), literal.eval()
    with torch.inference_mode():  # the pooling matrix made here must not break the next training step
        torch.testing.assert_close(fast(x), reference(literal, x), rtol=1e-5, atol=1e-5)
    fast.train()
    fast(x.clone().requires_grad_()).sum().backward()


def test_attention_factory_keeps_shape():
    x = torch.randn(2, 40, 9, 9)
    for kind in ATTENTIONS:
        assert create_attention(kind, 40).eval()(x).shape == x.shape
    with pytest.raises(ValueError, match="valid:"):
        create_attention("gc", 40)


def test_caco_model_has_caco_in_nine_slots():
    model = create_model("mobilenet_v3_small_caco")
    assert sum(isinstance(m, CaCo) for m in model.modules()) == 9


def test_pretrained_from_a_local_file_plain_and_caco(tmp_path):
    torch.manual_seed(1)
    imagenet_like = create_model("mobilenet_v3_small", num_classes=1000)
    path = tmp_path / "mnv3.pth"
    torch.save(imagenet_like.state_dict(), path)
    source = imagenet_like.state_dict()

    plain = create_model("mobilenet_v3_small")
    report = load_pretrained(plain, "mobilenet_v3_small", str(path))
    assert report.skipped == ["classifier.3.weight", "classifier.3.bias"]  # the 1000-class head
    assert set(report.new) == {"classifier.3.weight", "classifier.3.bias"}
    assert len(report.loaded) == len(source) - 2

    caco = create_model("mobilenet_v3_small_caco", pretrained=str(path))
    rep = caco.pretrained_report
    assert len(rep.loaded) == len(source) - 2 and len(rep.skipped) == 2
    ca_tensors = [k for k in caco.state_dict() if ".ca." in k]
    # per slot: conv1 w+b, bn1 w+b+mean+var+count, conv_h w+b, conv_w w+b
    assert len(ca_tensors) == 9 * 11
    assert set(rep.new) == set(ca_tensors) | {"classifier.3.weight", "classifier.3.bias"}
    state = caco.state_dict()
    for key in rep.loaded:
        assert torch.equal(state[key], source[key]), key


def test_pretrained_true_reads_the_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = expected_weights_file("mobilenet_v3_small")
    assert expected.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        create_model("mobilenet_v3_small_caco", pretrained=True)
    message = str(err.value)
    assert expected.name in message and str(expected.parent) in message
    assert "skinlib weights fetch mobilenet_v3_small" in message
    expected.parent.mkdir(parents=True)
    torch.save(create_model("mobilenet_v3_small", num_classes=1000).state_dict(), expected)
    model = create_model("mobilenet_v3_small", pretrained=True)
    assert len(model.pretrained_report.loaded) > 100


def test_wrong_weights_file_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"no tensor of .*other\.pth matches"):
        create_model("resnet18", pretrained=str(path))


def test_parameter_audit_explains_the_paper_counts():
    audit = parameter_audit(flops=False)
    assert audit.loc["ResNet18", "matches"] == "7-class head"
    assert audit.loc["ShuffleNetV2", "matches"] == "7-class head"
    assert audit.loc["EfficientNetB0", "matches"] == "1000-class head"
    assert audit.loc["GhostNetV2", "matches"] == "1000-class head"
    assert audit.loc["MobileNetV3-Small", "matches"] == "neither"


def test_flops_of_mobilenet_v3_small():
    # about 56 M multiply-adds at 224 px, counted as 2 FLOPs each
    assert 0.10e9 < count_flops(create_model("mobilenet_v3_small")) < 0.13e9


def test_bn_momentum_applies_to_every_batchnorm():
    from torch.nn.modules.batchnorm import _BatchNorm

    for name in list_models():  # inserted attention layers (CA, CaCo, CBAM) included
        model = create_model(name, bn_momentum=0.2)
        assert {m.momentum for m in model.modules() if isinstance(m, _BatchNorm)} == {0.2}, name
    caco = {m.momentum for m in create_model("mobilenet_v3_small_caco").modules() if isinstance(m, _BatchNorm)}
    assert caco == {0.01, 0.1}, "default: backbone 0.01 (torchvision), inserted CA 0.1 (PyTorch), as documented"
    assert {m.momentum for m in create_model("mobilenet_v3_small").modules() if isinstance(m, nn.BatchNorm2d)} \
        == {0.01}, "torchvision's own momentum is kept by default"
    with pytest.raises(ValueError, match="bn_momentum must be in"):
        create_model("resnet18", bn_momentum=0)


def test_the_fused_pointwise_product_equals_the_convolution_and_copies_no_weight_per_image():
    from torch.profiler import profile

    from skinlib.models.attention import _pointwise

    conv = torch.nn.Conv2d(16, 8, 1)
    rows = torch.randn(4, 16, 11)
    expected = conv(rows.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(_pointwise(rows, conv), expected, atol=1e-5)
    with profile() as prof, torch.autocast("cpu", dtype=torch.bfloat16):
        _pointwise(rows, conv)
    names = {e.key for e in prof.key_averages()}
    assert "aten::bmm" not in names and "aten::baddbmm" not in names  # one GEMM over N x L, no expanded weight
