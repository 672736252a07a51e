"""Classification metrics: sklearn agreement, undefined labels, patient-level bootstrap, calibration."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medres.errors import UsageError
from medres.metrics import (
    BootstrapInterval,
    MetricUndefinedWarning,
    MultiLabelBootstrapInterval,
    bootstrap_ci,
    choose_thresholds,
    classification_summary,
    compute_auprc,
    compute_auroc,
    expected_calibration_error,
    per_label_metrics,
    reliability_curve,
)


def tied_scores(seed: int, n_images: int = 300, prevalence: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores rounded to one decimal, so ties within and across classes are frequent."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_images) < prevalence).astype(int)
    scores = np.round(truth * 0.7 + rng.normal(size=n_images), 1)
    return truth, scores


def clustered_study(
    n_patients: int, images_per_patient: int, seed: int, n_labels: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images that share their patient's disease status and a strong per-patient score offset."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), images_per_patient)
    diseased = rng.random((n_patients, n_labels)) < 0.4
    flipped = rng.random((patients.size, n_labels)) < 0.1
    truth = (diseased[patients] ^ flipped).astype(int)
    patient_offset = rng.normal(scale=1.5, size=(n_patients, n_labels))
    scores = truth * 1.0 + patient_offset[patients] + rng.normal(scale=0.5, size=truth.shape)
    return truth, scores, patients


# --------------------------------------------------------------------------- point metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prevalence", [0.05, 0.3, 0.7])
def test_auroc_and_auprc_equal_sklearn_with_ties(seed: int, prevalence: float) -> None:
    truth, scores = tied_scores(seed, prevalence=prevalence)
    assert len(np.unique(scores)) < scores.size  # the case really has ties
    assert compute_auroc(truth, scores) == roc_auc_score(truth, scores)
    assert compute_auprc(truth, scores) == average_precision_score(truth, scores)


@pytest.mark.parametrize("metric", [compute_auroc, compute_auprc])
@pytest.mark.parametrize("single_class", [0, 1])
def test_single_class_is_nan_with_warning(metric, single_class: int) -> None:
    truth = np.full(20, single_class)
    with pytest.warns(MetricUndefinedWarning, match="only (positives|negatives)"):
        assert math.isnan(metric(truth, np.linspace(0, 1, 20)))


def test_per_label_means_skip_undefined_labels() -> None:
    truth, scores = tied_scores(0, n_images=200)
    truth_2d = np.column_stack([truth, np.zeros(200, int), 1 - truth])
    scores_2d = np.column_stack([scores, scores, -scores])
    with pytest.warns(MetricUndefinedWarning, match="'Hernia'"):
        result = per_label_metrics(truth_2d, scores_2d, ["Atelectasis", "Hernia", "Effusion"])
    assert math.isnan(result["per_label"]["Hernia"]["auroc"])
    assert math.isnan(result["per_label"]["Hernia"]["auprc"])
    defined = [result["per_label"][name]["auroc"] for name in ("Atelectasis", "Effusion")]
    assert result["mean_auroc"] == pytest.approx(np.mean(defined))
    assert result["per_label"]["Effusion"]["auprc"] == average_precision_score(1 - truth, -scores)


def test_mean_is_nan_when_no_label_is_defined() -> None:
    with pytest.warns(MetricUndefinedWarning):
        result = per_label_metrics(np.zeros((10, 2)), np.ones((10, 2)), ["a", "b"])
    assert math.isnan(result["mean_auroc"]) and math.isnan(result["mean_auprc"])


@pytest.mark.parametrize(
    ("truth", "scores", "message"),
    [
        (np.array([0, 1, 1]), np.array([0.1, 0.2]), "shape"),
        (np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]), "only 0 and 1"),
        (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]), "NaN"),
        (np.zeros((3, 2)), np.zeros((3, 2)), "1D"),
    ],
)
def test_bad_inputs_raise_usage_error(truth: np.ndarray, scores: np.ndarray, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        compute_auroc(truth, scores)
    assert caught.value.reason == "usage"


# --------------------------------------------------------------------------- bootstrap


def test_patient_level_interval_is_wider_when_patients_have_many_images() -> None:
    truth, scores, patients = clustered_study(n_patients=60, images_per_patient=20, seed=0)
    truth, scores = truth[:, 0], scores[:, 0]
    patient_level = bootstrap_ci(truth, scores, patients, n_boot=1000, seed=0)
    image_level = bootstrap_ci(truth, scores, None, n_boot=1000, seed=0)
    width_ratio = (patient_level.upper - patient_level.lower) / (image_level.upper - image_level.lower)
    assert width_ratio > 2.0  # about 3.1-3.9 over seeds 0-19 of this simulation


def test_one_image_per_patient_matches_image_level_bootstrap() -> None:
    truth, scores, _ = clustered_study(n_patients=600, images_per_patient=1, seed=1)
    truth, scores = truth[:, 0], scores[:, 0]
    shuffled_ids = np.random.default_rng(7).permutation([f"patient-{i:04d}" for i in range(truth.size)])
    patient_level = bootstrap_ci(truth, scores, shuffled_ids, n_boot=2000, seed=3)
    image_level = bootstrap_ci(truth, scores, None, n_boot=2000, seed=4)
    assert patient_level.lower == pytest.approx(image_level.lower, abs=0.01)
    assert patient_level.upper == pytest.approx(image_level.upper, abs=0.01)
    width_ratio = (patient_level.upper - patient_level.lower) / (image_level.upper - image_level.lower)
    assert 0.8 < width_ratio < 1.25
    identity_ids = bootstrap_ci(truth, scores, np.arange(truth.size), n_boot=200)
    assert identity_ids == bootstrap_ci(truth, scores, None, n_boot=200)  # the very same draws


@pytest.mark.parametrize("metric", [compute_auroc, compute_auprc])
def test_interval_contains_estimate_and_is_reproducible(metric) -> None:
    truth, scores, patients = clustered_study(n_patients=40, images_per_patient=5, seed=2)
    first = bootstrap_ci(truth[:, 0], scores[:, 0], patients, metric=metric, n_boot=500, seed=11)
    again = bootstrap_ci(truth[:, 0], scores[:, 0], patients, metric=metric, n_boot=500, seed=11)
    other = bootstrap_ci(truth[:, 0], scores[:, 0], patients, metric=metric, n_boot=500, seed=12)
    assert isinstance(first, BootstrapInterval)
    assert first.lower < first.estimate < first.upper
    assert first.estimate == metric(truth[:, 0], scores[:, 0])
    assert first == again and first != other
    assert first.n_replicates_used == 500


@pytest.mark.parametrize(
    ("fast_metric", "sklearn_metric"),
    [(compute_auroc, roc_auc_score), (compute_auprc, average_precision_score)],
)
@pytest.mark.parametrize("use_groups", [True, False])
def test_fast_replicates_equal_sklearn_on_explicit_resamples(
    fast_metric, sklearn_metric, use_groups: bool
) -> None:
    """The weighted-rank kernels must reproduce sklearn on each materialised resample."""
    truth, scores, patients = clustered_study(n_patients=30, images_per_patient=4, seed=5, n_labels=3)
    scores = np.round(scores, 1)  # ties
    truth[:, 2] = 0
    truth[:4, 2] = 1  # one patient holds every positive: many replicates lack positives
    groups = patients if use_groups else None
    fast = bootstrap_ci(truth, scores, groups, metric=fast_metric, n_boot=150, seed=9)
    called = bootstrap_ci(truth, scores, groups, metric=lambda t, s: sklearn_metric(t, s), n_boot=150, seed=9)
    assert isinstance(fast, MultiLabelBootstrapInterval)
    pairs = zip([*fast.per_label, fast.mean], [*called.per_label, called.mean], strict=True)
    for fast_label, generic_label in pairs:
        assert fast_label.n_replicates_used == generic_label.n_replicates_used
        np.testing.assert_allclose(
            [fast_label.estimate, fast_label.lower, fast_label.upper],
            [generic_label.estimate, generic_label.lower, generic_label.upper],
            rtol=0,
            atol=1e-12,
        )
    assert fast.per_label[2].n_replicates_used < 150  # replicates without positives were skipped
    assert fast.mean.n_replicates_used == 150


def test_multilabel_mean_interval_is_over_defined_labels() -> None:
    truth, scores, patients = clustered_study(n_patients=50, images_per_patient=3, seed=3, n_labels=3)
    truth[:, 1] = 0
    with pytest.warns(MetricUndefinedWarning, match="column 1"):
        result = bootstrap_ci(truth, scores, patients, n_boot=300)
    assert result.per_label[1].n_replicates_used == 0 and math.isnan(result.per_label[1].lower)
    expected_mean = np.mean([result.per_label[0].estimate, result.per_label[2].estimate])
    assert result.mean.estimate == pytest.approx(expected_mean)
    assert result.mean.lower < result.mean.estimate < result.mean.upper


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("n_boot", 0, "n_boot"),
        ("confidence", 1.5, "confidence"),
        ("groups", np.arange(3), "one patient id per image"),
        ("groups", np.r_[np.arange(19.0), np.nan], "missing patient ids"),
        ("groups", np.array(["p1"] * 19 + [None], dtype=object), "all strings or all numbers"),
    ],
)
def test_bootstrap_rejects_bad_settings(keyword: str, value: object, message: str) -> None:
    truth, scores = tied_scores(0, n_images=20)
    settings = {"groups": None, keyword: value}
    with pytest.raises(UsageError, match=message):
        bootstrap_ci(truth, scores, **settings)


# --------------------------------------------------------------------------- calibration and thresholds


def test_ece_is_zero_for_perfectly_calibrated_bins() -> None:
    probabilities = np.repeat([0.05, 0.25, 0.75], [20, 4, 8])
    truth = np.concatenate([[1] + [0] * 19, [1, 0, 0, 0], [1] * 6 + [0] * 2])
    assert expected_calibration_error(truth, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_ece_and_reliability_curve_match_hand_computation() -> None:
    probabilities = np.array([0.1, 0.2, 0.8, 0.9, 0.95])
    truth = np.array([0, 1, 1, 1, 0])
    # bin [0, .5): mean .15 vs observed .5 (2 images); bin [.5, 1]: mean .8833 vs observed .6667 (3 images)
    expected = 2 / 5 * abs(0.15 - 0.5) + 3 / 5 * abs((0.8 + 0.9 + 0.95) / 3 - 2 / 3)
    assert expected_calibration_error(truth, probabilities, n_bins=2) == pytest.approx(expected)
    curve = reliability_curve(truth, probabilities, n_bins=4)
    np.testing.assert_array_equal(curve.counts, [2, 0, 0, 3])
    np.testing.assert_allclose(curve.observed_fraction, [0.5, np.nan, np.nan, 2 / 3])
    np.testing.assert_allclose(curve.mean_predicted, [0.15, np.nan, np.nan, (0.8 + 0.9 + 0.95) / 3])


def test_calibration_refuses_logits() -> None:
    with pytest.raises(UsageError, match="sigmoid"):
        expected_calibration_error([0, 1], [-2.0, 3.0])


def test_thresholds_on_hand_example() -> None:
    positives, negatives = [0.2, 0.6, 0.7, 0.8, 0.9], [0.1, 0.3, 0.4, 0.5]
    truth = np.array([1] * 5 + [0] * 4)
    scores = np.array(positives + negatives)
    # at 0.6: sensitivity 4/5, specificity 1 -> J = 0.8, the maximum; sensitivity >= 0.9 first at 0.2
    result = choose_thresholds(truth, scores)
    assert result == {"0": {"youden": 0.6, "sensitivity_90": 0.2}}


def test_thresholds_are_nan_for_undefined_labels() -> None:
    truth = np.column_stack([[0, 1, 0, 1], [0, 0, 0, 0]])
    with pytest.warns(MetricUndefinedWarning, match="'Hernia'"):
        result = choose_thresholds(truth, np.ones((4, 2)) * 0.5, labels=["Mass", "Hernia"])
    assert math.isnan(result["Hernia"]["youden"]) and math.isnan(result["Hernia"]["sensitivity_90"])


# --------------------------------------------------------------------------- summary


@pytest.mark.parametrize("use_groups", [True, False])
def test_summary_is_strict_json_and_consistent(use_groups: bool) -> None:
    truth, scores, patients = clustered_study(n_patients=40, images_per_patient=4, seed=8, n_labels=3)
    probabilities = 1 / (1 + np.exp(-scores))
    truth[:, 2] = 0
    labels = ["Atelectasis", "Effusion", "Hernia"]
    groups = [f"p{p}" for p in patients] if use_groups else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = classification_summary(truth, probabilities, labels, groups=groups, n_boot=200, seed=1)
    assert sum(issubclass(w.category, MetricUndefinedWarning) for w in caught) == 1  # Hernia, once
    json.dumps(summary, allow_nan=False)
    atelectasis = summary["per_label"]["Atelectasis"]
    assert atelectasis["auroc"] == roc_auc_score(truth[:, 0], probabilities[:, 0])
    assert atelectasis["auroc_ci"][0] < atelectasis["auroc"] < atelectasis["auroc_ci"][1]
    assert atelectasis["n_positive"] + atelectasis["n_negative"] == truth.shape[0]
    assert atelectasis["ece"] == expected_calibration_error(truth[:, 0], probabilities[:, 0])
    hernia = summary["per_label"]["Hernia"]
    assert hernia["auroc"] is None and hernia["auroc_ci"] == [None, None] and hernia["n_positive"] == 0
    assert summary["mean_auroc_ci"][0] < summary["mean_auroc"] < summary["mean_auroc_ci"][1]
    level = "patient-level" if use_groups else "image-level"
    assert summary["ci_method"] == f"{level} bootstrap (200 replicates)"
    direct = bootstrap_ci(truth[:, :2], probabilities[:, :2], groups, compute_auprc, n_boot=200, seed=1)
    effusion_interval = direct.per_label[1]
    assert summary["per_label"]["Effusion"]["auprc_ci"] == [effusion_interval.lower, effusion_interval.upper]
