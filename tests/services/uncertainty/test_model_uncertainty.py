"""Monte Carlo dropout, injected dropout, test-time augmentation, the entropy split and the
calibration of injected dropout on tiny models."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from neuron_atlas_client.errors import InputError
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty import model_uncertainty
from services.uncertainty.dropout_calibration import (
    DEFAULT_GRID,
    DropoutCalibration,
    calibrate_injected_dropout,
    calibration_passes,
    expected_calibration_error,
    negative_log_likelihood,
)
from services.uncertainty.entropy import cluster_means, decompose
from services.uncertainty.model_inputs import ModelInputs
from services.uncertainty.model_uncertainty import (
    Method,
    augment,
    expected_support,
    pick_method,
    stochastic_active_sets,
)
from services.uncertainty.row_dropout import RowDraws, Stream, row_dropout

LAYERS = [LayerInfo("layer1", 16, 0), LayerInfo("layer2", 8, 16)]
CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """Stem, dropout (before the read layers, or only in the classifier), two read layers."""

    def __init__(self, p: float, dropout_in_features: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, stride=8), nn.ReLU())
        self.drop = nn.Dropout(p) if dropout_in_features else nn.Identity()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(16, 8, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.drop(self.stem(x)))))


ALL_ROWS = range(12)


def run(
    model: nn.Module,
    read: Callable[[Sequence[int]], list[Image.Image]],
    seed: int = 0,
    method: Method | None = None,
    rows: Sequence[int] = ALL_ROWS,
    batch_size: int = 5,
) -> np.ndarray:
    activity = stochastic_active_sets(
        model.eval(),
        LAYERS,
        ModelInputs(read, CPU),
        rows,
        0.25,
        "per_layer",
        16,
        seed,
        CPU,
        batch_size,
        method=method,
    )
    return activity.passes


def test_mc_dropout_gives_probabilities_strictly_between_0_and_1(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.3)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "mc_dropout"
    probability = run(model, read_images).mean(axis=0)
    uncertain = (probability > 0) & (probability < 1)
    assert uncertain.mean() > 0.1
    assert not model.training and not model.drop.training  # dropout is off again afterwards
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():  # and no hook is left behind: two plain passes agree
        assert torch.equal(model(batch), model(batch))


def test_dropout_with_p_zero_is_no_dropout_and_gets_injected_dropout(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    # ViT and Swin carry Dropout(p=0) before their blocks: it drops nothing, so it is no MC dropout
    model = TinyNet(p=0.0)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "injected_dropout"
    activity = stochastic_active_sets(
        model.eval(), LAYERS, ModelInputs(read_images, CPU), ALL_ROWS, 0.25, "per_layer", 16, 0, CPU, 5,
        dropout_rate=0.2,
    )  # fmt: skip
    assert activity.method == "injected_dropout" and activity.dropout_rate == 0.2
    probability = activity.probability
    assert ((probability > 0) & (probability < 1)).mean() > 0.05  # the injected dropout is real noise
    # and it is gone afterwards: two plain passes agree
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(batch), model(batch))


def test_dropout_only_after_the_read_layers_gets_injected_dropout(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.3, dropout_in_features=False)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "injected_dropout"
    passes = run(model, read_images)
    assert ((passes.mean(axis=0) > 0) & (passes.mean(axis=0) < 1)).any()


def test_augmentation_is_its_own_method_for_input_sensitivity(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.0, dropout_in_features=False)
    activity = stochastic_active_sets(
        model.eval(), LAYERS, ModelInputs(read_images, CPU), ALL_ROWS, 0.25, "per_layer", 6, 0, CPU, 5,
        method="tta",
    )  # fmt: skip
    assert activity.method == "tta" and activity.entropy is None and activity.dropout_rate is None
    assert activity.interpretation == "input sensitivity"
    assert ((activity.probability > 0) & (activity.probability < 1)).any()


@pytest.mark.parametrize(
    ("p", "dropout_in_features", "method"),
    [(0.3, True, None), (0.0, True, None), (0.0, False, "tta")],
    ids=["mc_dropout", "injected_dropout", "tta"],
)
def test_passes_on_a_sample_of_rows_are_those_rows_passes_in_a_run_over_all_rows(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
    p: float,
    dropout_in_features: bool,
    method: Method | None,
) -> None:
    """Each image's draws are its own: a seeded sample, in any order and any batches, gets
    exactly the passes (and the entropy split) that the same rows get in a run over every row."""
    model = TinyNet(p=p, dropout_in_features=dropout_in_features).eval()
    sample = [7, 2, 11, 3, 0]

    def activity(rows: Sequence[int], batch_size: int) -> model_uncertainty.StochasticActivity:
        return stochastic_active_sets(
            model, LAYERS, ModelInputs(read_images, CPU), rows, 0.25, "per_layer", 6, 3, CPU, batch_size,
            method=method,
        )  # fmt: skip

    everything, sampled = activity(ALL_ROWS, 5), activity(sample, 2)
    assert sampled.passes.shape == (6, len(sample), 24) and list(sampled.rows) == sample
    assert np.array_equal(sampled.passes, everything.passes[:, sample])
    assert 0 < sampled.probability.mean() < 1 and not np.all(np.isin(sampled.probability, (0.0, 1.0)))
    if method is None:  # the entropy split, per sampled row
        assert sampled.entropy is not None and everything.entropy is not None
        assert sampled.entropy.total.shape == (len(sample),)
        np.testing.assert_allclose(sampled.entropy.total, everything.entropy.total[sample], rtol=1e-6)
        np.testing.assert_allclose(
            sampled.entropy.mutual_information, everything.entropy.mutual_information[sample], atol=1e-9
        )


def test_the_models_own_dropout_is_read_as_epistemic(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    activity = stochastic_active_sets(
        TinyNet(p=0.3).eval(),
        LAYERS,
        ModelInputs(read_images, CPU),
        ALL_ROWS,
        0.25,
        "per_layer",
        8,
        0,
        CPU,
        5,
    )
    split = activity.entropy
    assert activity.method == "mc_dropout" and activity.interpretation == "epistemic"
    assert split is not None and split.interpretation == "epistemic" and split.total.shape == (12,)
    np.testing.assert_allclose(split.total, split.expected_entropy + split.mutual_information, atol=1e-12)
    assert (split.mutual_information > 0).all() and (split.total <= np.log(4) + 1e-9).all()


def test_injected_dropout_without_labels_is_sensitivity_to_feature_dropout(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    activity = stochastic_active_sets(
        TinyNet(p=0.0).eval(),
        LAYERS,
        ModelInputs(read_images, CPU),
        ALL_ROWS,
        0.25,
        "per_layer",
        8,
        0,
        CPU,
        5,
    )
    assert activity.method == "injected_dropout" and activity.dropout_rate == 0.1
    assert activity.interpretation == "sensitivity to feature dropout"
    assert (
        activity.entropy is not None and activity.entropy.interpretation == "sensitivity to feature dropout"
    )
    assert (activity.entropy.mutual_information > 0).any()  # the parts are there; only their name changed


def test_entropy_split_of_known_distributions() -> None:
    # two confident passes that disagree: no expected entropy, all mutual information (log 2)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    split = decompose(disagree, "epistemic")
    assert split.expected_entropy[0] == 0 and split.mutual_information[0] == pytest.approx(np.log(2))
    # two passes that agree on a coin flip: all expected entropy, no mutual information
    agree = np.full((2, 1, 2), 0.5)
    split = decompose(agree, "sensitivity to feature dropout")
    assert split.expected_entropy[0] == pytest.approx(np.log(2))
    assert split.mutual_information[0] == pytest.approx(0)


def test_cluster_entropy_is_the_mean_over_sampled_images_and_nan_without_any() -> None:
    split = decompose(
        np.array([[[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]]), "epistemic"
    )
    means = cluster_means(split, np.array([0, 0, 2]), 3)  # sampled rows of clusters 0, 0 and 2
    assert means.total[0] == pytest.approx(np.log(2)) and means.mutual_information[0] == pytest.approx(
        np.log(2) / 2
    )
    assert np.isnan(means.total[1]) and means.total[2] == 0


def test_stochastic_passes_repeat_exactly_with_the_seed(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.3)
    assert np.array_equal(run(model, read_images, seed=4), run(model, read_images, seed=4))
    assert not np.array_equal(run(model, read_images, seed=4), run(model, read_images, seed=5))


def test_expected_support_is_over_each_clusters_sampled_images() -> None:
    # 6 images in 3 clusters; rows 0, 1 (cluster 0) and 2 (cluster 1) sampled, cluster 2 not at all
    labels = np.array([0, 0, 1, 1, 2, 2])
    passes = np.zeros((2, 3, 2), dtype=bool)
    passes[0, :2, 0] = True  # pass 0: neuron 0 active in both sampled images of cluster 0
    passes[1, 0, 0] = True  # pass 1: in one of them
    passes[:, 2, 1] = True  # neuron 1 active in cluster 1's sampled image in every pass
    support = expected_support(passes, [0, 1, 2], labels, 3)
    assert list(support.sampled) == [2, 1, 0]
    assert support.mean[0, 0] == 0.75 and support.sd_passes[0, 0] == 0.25
    assert support.mean[1, 1] == 1 and support.sd_passes[1, 1] == 0 and support.mean[1, 0] == 0
    assert np.isnan(support.mean[2]).all() and np.isnan(support.standard_error[2]).all()
    assert support.standard_error[0, 0] == pytest.approx(np.sqrt(0.75 * 0.25 / 2))
    lower, upper = support.interval(2, np.array([0, 1]), 0.05)
    assert np.isnan(lower).all() and np.isnan(upper).all()


def test_expected_support_interval_narrows_with_the_images_sampled() -> None:
    """The same share over 2 or 40 sampled images: the interval reflects the sample's size, not
    the passes (an image's passes are not independent trials)."""
    widths = []
    for n in (2, 40):
        passes = np.zeros((4, n, 1), dtype=bool)
        passes[:, : n // 2, 0] = True  # half the sampled images, in every pass
        support = expected_support(passes, range(n), np.zeros(n, dtype=np.int64), 1)
        lower, upper = support.interval(0, np.array([0]), 0.05)
        assert support.mean[0, 0] == 0.5 and support.sd_passes[0, 0] == 0
        assert lower[0] < 0.5 < upper[0]
        widths.append(upper[0] - lower[0])
    assert widths[0] > 0.9 and widths[1] < 0.35  # Clopper-Pearson for 1 of 2, 20 of 40


def test_augmentation_is_mild_and_keeps_the_batch_shape() -> None:
    batch = torch.randn(4, 3, 32, 32)
    draws = RowDraws(0, CPU, Stream.AUGMENTATION)
    draws.start(range(4), 0)
    views = augment(batch, draws.uniform((6,)))
    assert views.shape == batch.shape
    assert not torch.equal(views, batch)
    # pixels stay in range: normalised values of [0, 1] pixels
    assert views.min() >= (0 - 0.485) / 0.229 - 1e-4 and views.max() <= (1 - 0.406) / 0.225 + 1e-4


def test_row_dropout_drops_elements_or_whole_channels_with_each_images_own_draws() -> None:
    draws = RowDraws(0, CPU)
    draws.start([5, 9], 0)
    dropped = row_dropout(torch.ones(2, 8, 4, 4), 0.5, draws, channels=True)
    per_map = dropped.flatten(2)
    assert set(per_map.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - rate)
    assert (per_map.min(dim=2).values == per_map.max(dim=2).values).all()  # whole channels
    draws.start([9], 0)  # image 9 alone in its batch: the same draws
    assert torch.equal(row_dropout(torch.ones(1, 8, 4, 4), 0.5, draws, channels=True)[0], dropped[1])
    # alpha dropout (SELU networks) keeps a standard normal input's mean and variance
    draws.start([1], 0)
    alpha = row_dropout(
        torch.randn(1, 200_000, generator=torch.Generator().manual_seed(0)), 0.2, draws, alpha=True
    )
    assert abs(float(alpha.mean())) < 0.01 and abs(float(alpha.std()) - 1) < 0.01


class SequenceFirstDropout(nn.Module):
    """Dropout on a tensor with the batch on its second axis, as a sequence-first transformer has."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x.transpose(0, 1)).transpose(0, 1)


def test_dropout_on_a_tensor_without_the_batch_first_is_still_seeded(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.0)
    model.drop = SequenceFirstDropout(0.3)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "mc_dropout"
    first, again = run(model, read_images, seed=2), run(model, read_images, seed=2)
    assert np.array_equal(first, again)  # the module's own dropout from the seeded generator
    assert ((first.mean(axis=0) > 0) & (first.mean(axis=0) < 1)).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_injected_dropout_passes_start_at_the_first_read_layer_with_the_same_draws(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout injected on the read layers' inputs changes nothing before the first of them: its
    input is computed once per batch, and the passes from there are the whole passes, draw for
    draw (active sets and the entropy split equal), with the stem run once per batch."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    layers = [LayerInfo("layer1", 64, 0), LayerInfo("layer3", 256, 64)]
    images = torch.randn(6, 3, 64, 64)
    stem_runs = []
    model.conv1.register_forward_hook(lambda *_: stem_runs.append(1))
    split = model_uncertainty.split_at_first_read_layer
    monkeypatch.setattr(
        model_uncertainty, "split_at_first_read_layer", lambda *a, **k: split(*a, **k) or pytest.fail()
    )
    results = {}
    for from_read_layer in (True, False):
        stem_runs.clear()
        results[from_read_layer] = stochastic_active_sets(
            model,
            layers,
            lambda rows: images[list(rows)],
            range(6),
            0.1,
            "per_layer",
            4,
            3,
            CPU,
            4,
            dtype=dtype,
            from_read_layer=from_read_layer,
        )
        assert results[from_read_layer].method == "injected_dropout"
        assert len(stem_runs) == (2 if from_read_layer else 2 * 4)  # 2 batches, 4 passes each
    fast, whole = results[True], results[False]
    assert np.array_equal(fast.passes, whole.passes)
    assert 0 < fast.probability.mean() < 1 and not np.all(np.isin(fast.probability, (0.0, 1.0)))
    assert fast.entropy is not None and whole.entropy is not None
    assert np.array_equal(fast.entropy.mutual_information, whole.entropy.mutual_information)


class TinyClassifier(nn.Module):
    """A stem, two read layers and a 4-class head whose logits are multiplied by `scale`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(16, 16, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x)))) * self.scale


CLASSIFIER_LAYERS = [LayerInfo("layer1", 16, 0), LayerInfo("layer2", 16, 16)]
LABELLED = 240


@pytest.fixture(scope="module")
def labelled_images() -> tuple[torch.Tensor, np.ndarray, float]:
    """Images, labels drawn from softmax(true_scale x the classifier's centred logits), and that
    scale: at `scale = true_scale` the classifier is calibrated, above it over-confident."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(LABELLED, 3, 16, 16, generator=generator)
    with torch.inference_mode():
        logits = TinyClassifier().eval()(images)
    logits = logits - logits.mean(dim=1, keepdim=True)
    true_scale = 2.0 / float(logits.std())
    labels = torch.multinomial(torch.softmax(logits * true_scale, dim=1), 1, generator=generator).squeeze(1)
    return images, labels.numpy(), true_scale


def classifier(scale: float) -> nn.Module:
    model = TinyClassifier().eval()
    model.scale.fill_(scale)
    return model


def calibrate(
    model: nn.Module, images: torch.Tensor, labels: np.ndarray, rows: Sequence[int]
) -> DropoutCalibration:
    return calibrate_injected_dropout(
        model, CLASSIFIER_LAYERS, lambda r: images[list(r)], rows, labels, DEFAULT_GRID, 8, 0, CPU, 64
    )


Calibrated = tuple[nn.Module, DropoutCalibration]


@pytest.fixture(scope="module")
def over_confident(labelled_images: tuple[torch.Tensor, np.ndarray, float]) -> Calibrated:
    """The classifier with logits 3x too large, calibrated on the labelled images but every tenth."""
    images, labels, true_scale = labelled_images
    labels = labels.copy()
    labels[::10] = -1  # unlabelled images take no part
    model = classifier(3 * true_scale)
    return model, calibrate(model, images, labels, range(LABELLED))


@pytest.fixture(scope="module")
def well_calibrated(labelled_images: tuple[torch.Tensor, np.ndarray, float]) -> Calibrated:
    images, labels, true_scale = labelled_images
    model = classifier(true_scale)
    return model, calibrate(model, images, labels, range(LABELLED))


def test_expected_calibration_error_of_a_hand_checked_example() -> None:
    probabilities = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.65, 0.3, 0.05], [0.2, 0.7, 0.1]])
    labels = np.array([0, 1, 0, 1])
    # bins of width 1/15: both 0.9s share (13/15, 14/15] (accuracy 1/2), 0.65 is alone in
    # (9/15, 10/15] and 0.7 alone in (10/15, 11/15] (both right):
    # 2/4 |0.5 - 0.9| + 1/4 |1 - 0.65| + 1/4 |1 - 0.7| = 0.2 + 0.0875 + 0.075
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.3625)
    assert expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(abs(0.75 - 0.7875))
    nll = -(np.log(0.9) + np.log(0.05) + np.log(0.65) + np.log(0.7)) / 4
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(nll)


def test_calibration_of_an_over_confident_model_fits_a_rate_that_lowers_held_out_nll(
    labelled_images: tuple[torch.Tensor, np.ndarray, float], over_confident: Calibrated
) -> None:
    labels = labelled_images[1]
    _, calibration = over_confident
    fit, held = set(calibration.fit_rows), set(calibration.evaluation_rows)
    labelled = {r for r in range(LABELLED) if r % 10}
    assert not fit & held and fit | held == labelled and abs(len(fit) - len(held)) <= 1
    assert calibration.grid == DEFAULT_GRID and len(calibration.fit_nll) == len(calibration.fit_ece) == 7
    assert calibration.rate > 0 and calibration.fit_nll_at_rate == min(calibration.fit_nll)
    assert calibration.fit_nll_at_rate < calibration.fit_nll[0]  # better than no dropout where fitted
    # and on the images it was not fitted on
    assert calibration.evaluation_nll < calibration.deterministic_nll - 2 * calibration.gain_se
    assert calibration.evaluation_ece < calibration.deterministic_ece
    assert calibration.calibrated and calibration.interpretation == "epistemic"
    assert calibration.finding.startswith(f"Calibrated: rate {calibration.rate:g}")
    assert f"held-out NLL {calibration.evaluation_nll:.4f}" in calibration.finding
    assert len(labels) == LABELLED


def test_calibration_of_a_calibrated_model_finds_no_rate_better_than_none(
    well_calibrated: Calibrated,
) -> None:
    _, calibration = well_calibrated
    assert calibration.rate == 0 and calibration.fit_nll[0] == min(calibration.fit_nll)
    assert not calibration.calibrated and calibration.interpretation == "sensitivity to feature dropout"
    assert calibration.evaluation_nll == calibration.deterministic_nll  # nothing else to score
    assert calibration.finding.startswith("No injected dropout rate calibrates better than the deterministic")


@pytest.mark.parametrize(
    ("case", "interpretation"),
    [("over_confident", "epistemic"), ("well_calibrated", "sensitivity to feature dropout")],
)
def test_only_a_calibrated_rate_makes_injected_dropout_epistemic(
    labelled_images: tuple[torch.Tensor, np.ndarray, float],
    case: str,
    interpretation: str,
    request: pytest.FixtureRequest,
) -> None:
    images = labelled_images[0]
    model, calibration = request.getfixturevalue(case)
    activity = stochastic_active_sets(
        model, CLASSIFIER_LAYERS, lambda rows: images[list(rows)], range(20), 0.25, "per_layer", 4, 0, CPU, 8,
        dropout_rate=0.1, calibration=calibration,
    )  # fmt: skip
    # a calibrated rate runs; otherwise the configured rate, read as sensitivity
    assert activity.dropout_rate == (calibration.rate if calibration.calibrated else 0.1)
    assert activity.interpretation == interpretation
    assert activity.entropy is not None and activity.entropy.interpretation == interpretation


def test_calibration_runs_the_passes_its_cost_function_counts(
    labelled_images: tuple[torch.Tensor, np.ndarray, float],
) -> None:
    images, labels, true_scale = labelled_images
    model = classifier(3 * true_scale)
    head_rows: list[int] = []
    model.head[2].register_forward_hook(lambda _m, _i, out: head_rows.append(out.shape[0]))
    calibration = calibrate(model, images, labels, range(40))
    cost = calibration_passes(DEFAULT_GRID, 8)
    assert (cost.fit, cost.evaluation) == (1 + 6 * 8, 1 + 8)
    assert calibration.rate > 0  # so the evaluation images ran every pass the cost allows
    assert sum(head_rows) == cost.total(len(calibration.fit_rows), len(calibration.evaluation_rows))
    assert calibration_passes((0.0, 0.1, 0.1, 0.2), 4).fit == 9  # the deterministic pass once, rates once


def test_calibration_needs_labelled_images_within_the_models_classes(
    labelled_images: tuple[torch.Tensor, np.ndarray, float],
) -> None:
    images, labels, true_scale = labelled_images
    few = np.full(LABELLED, -1)
    few[:3] = labels[:3]
    with pytest.raises(InputError, match="at least 4 labelled images, and 3 of the 240"):
        calibrate(classifier(true_scale), images, few, range(LABELLED))
    wrong = labels.copy()
    wrong[5] = 9
    with pytest.raises(InputError, match="class 9, and the target model has 4 classes"):
        calibrate(classifier(true_scale), images, wrong, range(LABELLED))
