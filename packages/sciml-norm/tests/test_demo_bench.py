import pytest
import timm.layers
import torch
from sciml_norm.bench import EvoNormBenchmark, _saved_bytes, cases
from sciml_norm.demo import LAYERS, EvoNormBatchSizeDemo, demos, make_texture_images, small_cnn
from sciml_protocols import BenchContext, BenchmarkCase, Demo, DemoContext, SciMLInputError


def test_entry_points_give_protocol_objects():
    found = demos()
    assert all(isinstance(d, Demo) for d in found)
    names = [d.name for d in found]
    assert names[0] == "evonorm-batch-size"
    assert len(set(names)) == len(names)
    assert [d.name for d in found] == ["evonorm-batch-size", "evonorm-search", "mip-hypernetwork", "neumeta-widths"]
    all_cases = cases()
    assert all(isinstance(c, BenchmarkCase) for c in all_cases)
    assert len({c.name for c in all_cases}) == len(all_cases)
    assert {c.peer for c in all_cases} == {"timm.layers.EvoNorm2dS0", "timm.layers.EvoNorm2dB0"}


def _centred_spectrum(image):
    # Remove what varies per sample apart from the shift (per-channel offset, global contrast); the magnitude of
    # the 2-D DFT is then invariant to circular shifts.
    centred = image - image.mean(dim=(1, 2), keepdim=True)
    spectrum = torch.fft.fft2(centred).abs()
    return spectrum / spectrum.norm()


def test_texture_images_are_shifted_scaled_templates():
    x, y = make_texture_images(300, noise=0.0, seed=3)
    assert x.shape == (300, 3, 16, 16)
    assert x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))
    x_other, y_other = make_texture_images(300, noise=0.0, seed=4)
    i = int((y == 5).nonzero()[0])
    j = int((y_other == 5).nonzero()[0])
    k = int((y_other == 6).nonzero()[0])
    # same class, other seed (other shift, contrast, offset): same spectrum; another class: a different one
    assert torch.allclose(_centred_spectrum(x[i]), _centred_spectrum(x_other[j]), atol=1e-5)
    assert float((_centred_spectrum(x[i]) - _centred_spectrum(x_other[k])).norm()) > 0.1
    # the seed fixes the draw; noise is additive, with the requested standard deviation
    noisy, same_labels = make_texture_images(300, noise=0.5, seed=3)
    assert torch.equal(same_labels, y)
    assert float((noisy - x).std()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize(
    "bad", [{"n": 0}, {"n": 4, "size": 2}, {"n": 4, "noise": -1.0}, {"n": 4, "noise": float("nan")}]
)
def test_texture_images_reject_bad_arguments(bad):
    with pytest.raises(SciMLInputError):
        make_texture_images(**bad)


@pytest.mark.parametrize("layer", LAYERS)
def test_small_cnn_batch_dependence_matches_the_layer(layer):
    net = small_cnn(layer, seed=1).train()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(4)])
    assert together.shape == (4, 10)
    independent = torch.allclose(together, alone, atol=1e-5)
    # GroupNorm and EvoNorm-S0 see one sample at a time; BatchNorm and B0 use batch statistics in training
    assert independent == (layer in ("GN-ReLU", "EvoNorm-S0"))


def test_small_cnn_uses_our_evonorm_and_is_seeded():
    from sciml_norm._evonorm import EvoNorm2dB0, EvoNorm2dS0

    assert sum(isinstance(m, EvoNorm2dS0) for m in small_cnn("EvoNorm-S0").modules()) == 3
    assert sum(isinstance(m, EvoNorm2dB0) for m in small_cnn("EvoNorm-B0").modules()) == 3
    a, b = small_cnn("BN-ReLU", seed=2), small_cnn("BN-ReLU", seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(SciMLInputError, match="layer"):
        small_cnn("LayerNorm")


def test_saved_bytes_counts_what_autograd_keeps():
    x = torch.randn(10, 20, requires_grad=True)
    # exp saves its result (800 bytes); x * x saves x once (two references to one storage)
    assert _saved_bytes(lambda: x.exp()) == 10 * 20 * 4
    assert _saved_bytes(lambda: x * x) == 10 * 20 * 4
    assert _saved_bytes(lambda: x.detach().exp()) == 0


def test_bench_rejects_bad_arguments():
    with pytest.raises(SciMLInputError, match="layer"):
        EvoNormBenchmark("S1")
    with pytest.raises(SciMLInputError, match="stage"):
        EvoNormBenchmark("S0", "stage9")
    with pytest.raises(SciMLInputError, match="dtype"):
        EvoNormBenchmark("S0", "stage1", torch.int32)


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_bench_cases_quick(case):
    ctx = BenchContext(quick=True, min_run_time=0.01)
    result = case.run(ctx)
    assert result.ours.time_s > 0
    assert result.peer is not None
    assert result.peer.time_s > 0
    assert result.peer.label.startswith("timm")
    metrics = result.ours.metrics
    assert metrics["parity"] < 1e-5
    assert metrics["max |ours - timm| (output)"] < 1e-5
    # BatchNorm2d saves its input, ReLU its output (plus per-channel vectors): two activation tensors
    n, c, h, w = case.shape(ctx)
    activation_mb = n * c * h * w * 4 / 1e6
    assert 2 * activation_mb <= metrics["BatchNorm2d+ReLU saved MB"] < 2 * activation_mb + 0.1
    # an EvoNorm layer keeps at least its input for the backward pass
    assert metrics["saved MB"] >= activation_mb
    assert result.peer.metrics["saved MB"] >= activation_mb
    if case.layer == "B0":
        assert metrics["max |ours - timm| (running_var)"] < 1e-6


def test_bench_parity_metric_sees_a_difference():
    # The comparison the cases report must be able to fail: timm's layer with another eps is caught.
    from sciml_norm._evonorm import EvoNorm2dS0
    from sciml_norm.bench import _compare, _Step

    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    grad_output = torch.randn(2, 8, 4, 4)
    same = _compare(
        _Step(EvoNorm2dS0(8, groups=2), x, grad_output), _Step(timm.layers.EvoNorm2dS0(8, groups=2), x, grad_output)
    )
    assert same["parity"] < 1e-6
    other = timm.layers.EvoNorm2dS0(8, groups=2, eps=0.5)
    different = _compare(_Step(EvoNorm2dS0(8, groups=2), x, grad_output), _Step(other, x, grad_output))
    assert different["parity"] > 1e-2
    assert different["max |ours - timm| (output)"] > 1e-2


@pytest.mark.slow
def test_batch_size_demo_quick(tmp_path):
    result = EvoNormBatchSizeDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, dict(result.metrics)
    for layer in LAYERS:
        for batch_size in (2, 32):
            accuracy = result.metrics[f"{layer} @ batch {batch_size}"]
            assert isinstance(accuracy, float)
            assert 0.0 <= accuracy <= 1.0
    assert result.metrics["EvoNorm-S0 @ batch 2"] > result.metrics["BN-ReLU @ batch 2"]
    (figure,) = result.figures
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
