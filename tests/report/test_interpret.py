"""The report's sentences: verdicts follow the interval, inverted scores are flagged."""

from __future__ import annotations

from patchvae.report.interpret import baseline_sentence, majority_sentence, verdict, without_paths


def _metrics(auroc: float, difference: tuple[float, float]) -> dict:
    return {
        "auroc": auroc,
        "intervals": {
            "by_patch": {"auroc": [auroc - 0.05, auroc + 0.05], "difference": list(difference)}
        },
    }


BASE = {"auroc": 0.70, "intervals": {"by_patch": {"auroc": [0.65, 0.75]}}}


def test_verdict_follows_the_interval_of_the_difference() -> None:
    assert "beats the intensity baseline" in verdict("neg_elbo", _metrics(0.8, (0.02, 0.18)), BASE)
    assert "is worse than" in verdict("neg_elbo", _metrics(0.6, (-0.2, -0.01)), BASE)
    tied = verdict("recon_error", _metrics(0.72, (-0.03, 0.07)), BASE)
    assert tied.startswith("reconstruction error cannot be told apart")
    assert "95 % CI -0.030 to +0.070" in tied and "AUROC 0.720 (95 % CI 0.670 to 0.770)" in tied


def test_inverted_scores_are_flagged_not_flipped() -> None:
    text = verdict("latent_nll", _metrics(0.31, (-0.5, -0.3)), BASE)
    assert text.startswith("INVERTED: latent rarity") and "0.310" in text and "0.690" not in text


def test_few_positives_and_majority_level_are_said() -> None:
    assert "intervals are wide" in baseline_sentence(BASE, 16, 340)
    assert "intervals are wide" not in baseline_sentence(BASE, 400, 4000)
    clustering = {
        "kmeans": {"accuracy": 0.87, "majority": 0.95},
        "gmm": {"accuracy": 0.97, "majority": 0.95},
    }
    assert majority_sentence(clustering).endswith("Above it: gmm.")


def test_no_machine_paths() -> None:
    assert (
        without_paths("store /tmp/a/b/s.h5, see https://x.org/a/b")
        == "store s.h5, see https://x.org/a/b"
    )
