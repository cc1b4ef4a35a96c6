"""Grad-CAM mask score, ONNX parity, external evaluation helpers and the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from skinlib import plots
from skinlib.data import CLASSES
from skinlib.explain import cam_mask_score, gradcam, target_layer
from skinlib.models import create_model


def test_cam_mask_score_extremes():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 3:8] = True
    assert cam_mask_score(mask.astype(float), mask) == pytest.approx(1.0)
    assert cam_mask_score(np.ones((10, 10)), mask) == pytest.approx(mask.mean())
    batch = cam_mask_score(np.stack([mask.astype(float), np.ones((10, 10))]), np.stack([mask, mask]))
    assert batch == pytest.approx([1.0, 0.2])
    assert np.isnan(cam_mask_score(np.zeros((10, 10)), mask))
    with pytest.raises(ValueError, match="same shape"):
        cam_mask_score(np.ones((5, 5)), mask)


@pytest.mark.parametrize("name", ["mobilenet_v3_small_caco", "resnet18", "efficientnet_b0", "shufflenet_v2_x2_0",
                                  "ghostnetv2_100"])
def test_gradcam_runs_for_the_zoo(name):
    model = create_model(name)
    assert isinstance(target_layer(model), torch.nn.Module)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    cams = gradcam(model, images, image_size=64, targets=[0, 3])
    assert cams.shape == (2, 64, 64) and cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_onnx_parity_caco_can_fail(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra (pip install skinlib[onnx])")
    import onnx
    from onnx import numpy_helper

    from skinlib.efficiency import onnx_parity

    path = str(tmp_path / "caco.onnx")
    fresh = onnx_parity(create_model("mobilenet_v3_small_caco"), path, image_size=64)
    assert not fresh["informative"]  # untrained: every probability near 1/7, any export would agree
    # outputs that differ between images and classes, as a trained model's do: BatchNorm statistics from one
    # batch (a fresh network in eval mode shrinks every activation towards 0) and a classifier of unit gain
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small_caco", bn_momentum=1.0).train()
    with torch.no_grad():
        model(torch.randn(32, 3, 64, 64))
    for layer in model.classifier:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
    result = onnx_parity(model, path, image_size=64)
    assert result["informative"] and result["within_tolerance"], result
    graph = onnx.load(path)
    for init in graph.graph.initializer:  # perturb one weight tensor of the exported file by 1 %
        if init.dims and len(init.dims) == 4:
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(values * 1.01, init.name))
            break
    onnx.save(graph, path)
    broken = onnx_parity(model, path, image_size=64, export=False)
    assert not broken["within_tolerance"], broken


def test_interleaved_latency_tells_identical_models_apart_from_slower_ones():
    from torch import nn

    from skinlib.efficiency import AA_ARM, compare_latency

    def net(depth: int) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(depth)])

    from skinlib.efficiency import NOISY_FLOOR

    table = compare_latency({"a": net(4), "b": net(4), "c": net(40)}, reference="a", image_size=48, rounds=21,
                            per_round=3, warmup=1)
    assert table.loc["c", "ratio"] > 3, table
    if table.attrs["noise_floor"] > NOISY_FLOOR:  # a loaded machine: the method must then say nothing
        assert set(table.loc[["b", "c"], "verdict"]) == {"too noisy here: no verdict"}, table
    else:
        assert table.loc["b", "verdict"] == "no difference", table
        assert table.loc["c", "verdict"] == "slower", table
    assert table.loc[AA_ARM, "verdict"] == "noise control" and table.attrs["noise_floor"] >= 0
    assert table.attrs["clock"] == "thread"  # one thread: CPU time of this thread, which others barely disturb


def test_latency_gives_no_verdict_when_the_identical_arm_is_noisy():
    from torch import nn

    from skinlib.efficiency import NOISY_FLOOR, compare_latency

    class Erratic(nn.Module):
        """Each call does 1 to 4 units of work at random: the same model never times alike."""

        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(0)
            self.w = torch.randn(96, 96)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.w
            for _ in range(int(self.rng.integers(1, 5)) * 40):
                y = torch.tanh(y @ self.w)
            return x + y.mean()

    erratic = Erratic()
    table = compare_latency({"a": erratic, "c": nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1)] * 2)},
                            reference="a", image_size=32, rounds=9, per_round=1, warmup=1)
    assert table.attrs["noise_floor"] > NOISY_FLOOR
    assert table.loc["c", "verdict"] == "too noisy here: no verdict"


def _history(epochs: int) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, epochs + 1), "train_loss": np.linspace(2, 1, epochs),
                         "val_loss": np.linspace(2.1, 1.2, epochs), "train_accuracy": np.linspace(.5, .8, epochs),
                         "val_accuracy": np.linspace(.4, .7, epochs)})


def test_figures_have_the_expected_parts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    probs = rng.dirichlet(np.ones(7), 200)
    fig = plots.training_curves({"a": _history(1), "b": _history(5)})
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    [legend] = fig.legends  # below the panels, not on a panel: it covers no curve
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "training", "validation"]
    assert not fig.axes[0].get_legend() and not fig.axes[1].get_legend()
    fig.canvas.draw()
    legend_box = legend.get_window_extent()
    assert all(legend_box.y1 <= ax.get_window_extent().y0 for ax in fig.axes)
    fig = plots.roc_curves(y, probs)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 8  # 7 classes + chance
    fig = plots.reliability_diagram(y, probs)
    assert len(fig.axes[0].patches) == np.unique(np.clip(np.ceil(probs.max(1) * 15) - 1, 0, 14)).size
    table = pd.DataFrame({"bacc": [0.5, 0.6, 0.55], "low": [0.4, 0.5, 0.5], "high": [0.6, 0.7, 0.6]},
                         index=["se", "ca", "caco"])
    fig = plots.ablation_bars(table, value="bacc", low="low", high="high")
    assert len(fig.axes[0].patches) == 3
    study = pd.DataFrame({"_bacc": [0.5, 0.6], "_bacc_low": [0.4, 0.5], "_bacc_high": [0.6, 0.7]}, index=["a", "b"])
    fig = plots.study_bars(study, title="t")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([50, 60]) and fig.axes[0].get_ylabel() == "test bacc % (95 % CI)"
    scatter = pd.DataFrame({"params_m": [1.5, 11.2], "bacc": [0.6, 0.65]}, index=["mnv3", "resnet18"])
    fig = plots.accuracy_vs_params(scatter, paper=scatter)
    assert len(fig.axes[0].collections) == 2
    cm = np.eye(7, dtype=int) * 3
    cm[0, 1] = 1  # melanoma: 3 right, 1 called nv -> row fractions 0.75 and 0.25
    fig = plots.confusion_matrix(cm)
    [ax] = fig.axes
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 49 and cells[0] == "0.75" and cells[1] == "0.25" and cells[8] == "1.00"
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASSES) and ax.get_ylabel() == "true"
    counts = plots.confusion_matrix(cm, normalize=False)
    assert [t.get_text() for t in counts.axes[0].texts][:2] == ["3", "1"]
    images = rng.integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    fig = plots.gradcam_grid(images, np.ones((2, 32, 32), bool), rng.random((2, 32, 32)), ["a", "b"])
    assert len(fig.axes) == 7  # 2 x 3 panels and the colour bar
    overlay = fig.axes[2].images[-1]
    assert overlay.get_cmap().name == plots.CAM_MAP == "inferno" and overlay.get_clim() == (0, 1)
    assert "Grad-CAM" in fig.axes[-1].get_ylabel()  # the colour bar says what it measures


def test_masks_of_the_real_data(ham_index, data_dir):
    from skinlib.data.masks import find_masks, load_masks

    sample = ham_index.head(5)
    masks = load_masks(find_masks(sample, data_dir).tolist(), 32)
    assert masks.shape == (5, 32, 32) and masks.dtype == bool
    assert 0.01 < masks.mean() < 0.99


def test_throughput_and_latency_helpers_on_the_cpu():
    from skinlib.efficiency import measure_latency, measure_throughput

    model = create_model("mobilenet_v3_small")
    t = measure_throughput(model, image_size=64, batch=4, steps=2, device="cpu")
    assert t["images_per_s"] > 0 and t["batch"] == 4
    lat = measure_latency(model, image_size=64, runs=3, warmup=1, threads=1)
    assert 0 < lat["median_ms"] <= lat["p90_ms"] and lat["runs"] == 3
    with pytest.raises(ValueError, match="runs must be"):
        measure_latency(model, runs=0)


def test_data_figures(ham_index):
    sample = ham_index.groupby("dx").head(3)
    fig = plots.class_distribution(sample)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 7
    fig = plots.images_per_lesion(ham_index)
    assert len(fig.axes[0].patches) == ham_index.groupby("lesion_id").size().nunique()
    images = np.zeros((len(sample), 3, 16, 16), dtype=np.uint8)
    fig = plots.montage(images, sample, per_class=3)
    assert len(fig.axes) == 21


def test_gradcam_reads_a_layer_with_enough_cells():
    from skinlib.explain import MIN_CELLS, map_size

    for name in ("mobilenet_v3_small_caco", "resnet18"):
        model = create_model(name)
        assert map_size(model, target_layer(model), 64) == (2, 2)  # the last stage: four cells
        for size in (64, 224):
            grid = map_size(model, target_layer(model, image_size=size), size)
            assert min(grid) >= MIN_CELLS, (name, size, grid)


def test_cam_scores_are_read_against_their_nulls():
    from skinlib.explain import cam_null_summary, mask_score_table

    rng = np.random.default_rng(0)
    n, size = 40, 16
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):  # lesions of different places and sizes
        r, c, h = rng.integers(0, 8), rng.integers(0, 8), rng.integers(3, 8)
        masks[i, r:r + h, c:c + h] = True
    index = pd.DataFrame({"image_id": [f"I{i}" for i in range(n)], "dx": "nv", "label": 1})
    preds = np.ones(n, dtype=int)
    on_lesion = mask_score_table(index, masks.astype(float), masks, preds)
    uniform = mask_score_table(index, np.ones((n, size, size)), masks, preds)
    assert np.allclose(on_lesion["cam_in_mask"], 1) and np.allclose(uniform["cam_in_mask"], uniform["mask_area"])
    good, flat = cam_null_summary(on_lesion, n_boot=200), cam_null_summary(uniform, n_boot=200)
    assert set(good["verdict"]) == {"more on the lesion than the null"}
    assert flat.iloc[0]["verdict"] == "no different from the null"  # a uniform map scores the mask area
    assert flat.attrs["n_images"] == n and flat.attrs["n_empty"] == 0
    blank = masks.astype(float)
    blank[:5] = 0  # five maps without any gradient: no score, and counted
    partly = cam_null_summary(mask_score_table(index, blank, masks, preds), n_boot=200)
    assert partly.attrs["n_empty"] == 5 and set(partly["empty maps"]) == {5}


def _cam_table(trained, random, n=400, seed=0):
    rng = np.random.default_rng(seed)
    other = rng.uniform(0.2, 0.4, n)
    return pd.DataFrame({"image_id": [f"I{i}" for i in range(n)], "lesion_id": [f"L{i // 2}" for i in range(n)],
                         "cam_in_mask": other + trained + rng.normal(0, 0.05, n), "other_mask": other,
                         "cam_in_mask_random": other + random + rng.normal(0, 0.05, n), "other_mask_random": other})


def test_randomisation_check_fails_when_the_map_ignores_the_weights():
    from skinlib.book.claims import randomisation_sentence
    from skinlib.explain import randomisation_check

    same = randomisation_check(_cam_table(0.1, 0.1), n_boot=300)  # the random network's map is just as good
    assert same["word"] == "not model-specific" and same["low"] < 0 < same["high"]
    assert "not model-specific" in randomisation_sentence(same)
    specific = randomisation_check(_cam_table(0.1, -0.05), n_boot=300)
    assert specific["word"] == "model-specific" and specific["low"] > 0
    assert "explains this model" in randomisation_sentence(specific)
    older = randomisation_check(_cam_table(0.1, 0.0).drop(columns=["cam_in_mask_random"]))
    assert older["word"] == "not measured" and "not run" in randomisation_sentence(older)


def test_cam_intervals_resample_lesions_not_images():
    from skinlib.explain import cam_null_summary

    table = _cam_table(0.02, 0.0)
    table["mask_area"] = table["other_mask"]
    by_image = cam_null_summary(table.assign(lesion_id=table["image_id"]), n_boot=400)
    # every lesion twice with identical rows: resampling lesions halves the effective sample, so the interval widens
    paired = table.iloc[::2].reset_index(drop=True)
    twice = pd.concat([paired, paired]).sort_values("lesion_id", ignore_index=True)
    by_lesion = cam_null_summary(twice, n_boot=400)
    as_images = cam_null_summary(twice.assign(lesion_id=[f"x{i}" for i in range(len(twice))]), n_boot=400)
    width = (by_lesion["high"] - by_lesion["low"]).iloc[-1]
    assert width > 1.25 * (as_images["high"] - as_images["low"]).iloc[-1]
    assert by_image.attrs["n_lesions"] == len(table) and by_lesion.attrs["n_lesions"] == len(paired)


def test_onnx_parity_is_kept_for_a_bundle_without_weights(tmp_path, monkeypatch):
    """Measured while the weights are at hand, the parity is kept in the run folder; once the weights are gone
    (a bundle), the stored result answers, marked as stored; with neither, the missing weights are the error."""
    import json
    from types import SimpleNamespace

    from skinlib import inference

    files = {"best.pt": tmp_path / "best.pt", inference.ONNX_PARITY_FILE: tmp_path / inference.ONNX_PARITY_FILE}
    run = SimpleNamespace(file=lambda name: files[name])
    files["best.pt"].write_bytes(b"weights")
    measured = {"max_abs_diff": 1e-7, "max_rel_logit_diff": 2e-7, "atol": 1e-4, "within_tolerance": True,
                "informative": True}
    monkeypatch.setattr(inference, "load_model", lambda run: None)
    monkeypatch.setattr(inference, "held_out_index", lambda run, data_dir: None)
    monkeypatch.setattr(inference, "onnx_parity_of_run", lambda run, path, data_dir=None: dict(measured))
    assert inference.record_onnx_parity(run) == measured
    assert json.loads(files[inference.ONNX_PARITY_FILE].read_text()) == measured
    monkeypatch.undo()
    files["best.pt"].unlink()
    assert inference.onnx_parity_of_run(run, tmp_path / "x.onnx") == {**measured, "stored": True}
