from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import patchvae.train.compiled
from patchvae.batches import batch_indices
from patchvae.checkpoint import load_checkpoint, load_model
from patchvae.config import TrainConfig
from patchvae.errors import ConfigError, DataError
from patchvae.models import VAEConfig, build_model
from patchvae.train import fit
from tests.conftest import needs_cxx

SMALL = VAEConfig(input_shape=(1, 6, 6), hidden_dims=[16], latent_dim=2)


def data(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed))


def losses(result) -> list[float]:  # type: ignore[no-untyped-def]
    return [h["train_loss"] for h in result.history]


def test_batches_cover_every_sample_once_whatever_the_batch_size() -> None:
    for n, bs in ((37, 10), (37, 37), (37, 500), (100, 1), (100, 100)):
        batches = batch_indices(n, bs, torch.Generator().manual_seed(0))
        assert sorted(torch.cat(batches).tolist()) == list(range(n))
        assert [len(b) for b in batches] == [bs] * (n // bs) + ([n % bs] if n % bs else [])


def test_batch_size_that_does_not_divide_n_trains() -> None:
    x = data(37)
    for bs in (10, 36, 500):
        r = fit(SMALL, TrainConfig(epochs=2, batch_size=bs, device="cpu"), x, progress=False)
        assert len(r.history) == 2 and all(
            torch.isfinite(torch.tensor(h["train_loss"])) for h in r.history
        )


def test_loss_falls() -> None:
    result = fit(
        SMALL,
        TrainConfig(epochs=8, batch_size=8, optimizer="adam", device="cpu"),
        data(64),
        progress=False,
    )
    assert losses(result)[-1] < losses(result)[0]


def test_same_seed_same_losses_other_seed_other_losses() -> None:
    x, xv = data(50), data(20, seed=1)
    runs = [
        fit(
            SMALL, TrainConfig(epochs=3, batch_size=16, seed=s, device="cpu"), x, xv, progress=False
        )
        for s in (5, 5, 6)
    ]
    assert losses(runs[0]) == losses(runs[1])
    assert [h["val_loss"] for h in runs[0].history] == [h["val_loss"] for h in runs[1].history]
    assert losses(runs[0]) != losses(runs[2])


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    result = fit(
        SMALL,
        TrainConfig(epochs=2, batch_size=16, device="cpu"),
        data(40),
        checkpoint_path=ckpt,
        progress=False,
    )
    model = load_model(ckpt)
    assert model.config == SMALL
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    saved = load_checkpoint(ckpt)
    assert saved["epoch"] == 2 and saved["train_config"]["batch_size"] == 16
    assert "versions" in saved["metadata"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    x, xv = data(45), data(10, seed=2)
    straight = fit(SMALL, TrainConfig(epochs=4, batch_size=8, device="cpu"), x, xv, progress=False)
    ckpt = tmp_path / "c.pt"
    fit(
        SMALL,
        TrainConfig(epochs=2, batch_size=8, device="cpu"),
        x,
        xv,
        checkpoint_path=ckpt,
        progress=False,
    )
    resumed = fit(
        SMALL,
        TrainConfig(epochs=4, batch_size=8, device="cpu"),
        x,
        xv,
        checkpoint_path=ckpt,
        resume=True,
        progress=False,
    )
    assert resumed.resumed_from_epoch == 2
    assert losses(resumed) == losses(straight)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value)


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    fit(
        SMALL,
        TrainConfig(epochs=1, batch_size=8, device="cpu"),
        data(20),
        checkpoint_path=ckpt,
        progress=False,
    )
    with pytest.raises(ConfigError, match="other training settings"):
        fit(
            SMALL,
            TrainConfig(epochs=2, batch_size=4, device="cpu"),
            data(20),
            checkpoint_path=ckpt,
            resume=True,
            progress=False,
        )
    other = VAEConfig(input_shape=(1, 6, 6), hidden_dims=[8], latent_dim=2)
    with pytest.raises(ConfigError, match="other model settings"):
        fit(
            other,
            TrainConfig(epochs=2, batch_size=8, device="cpu"),
            data(20),
            checkpoint_path=ckpt,
            resume=True,
            progress=False,
        )


def test_damaged_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"c\.pt: not a readable checkpoint"):
        load_model(ckpt)


def test_data_shape_must_match_model() -> None:
    with pytest.raises(ConfigError, match="model expects"):
        fit(SMALL, TrainConfig(epochs=1, device="cpu"), torch.rand(4, 1, 5, 5), progress=False)


def test_cuda_request_without_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        fit(SMALL, TrainConfig(epochs=1, device="cuda"), data(4), progress=False)


def test_progress_is_a_few_plain_lines_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fit(VAEConfig(), TrainConfig(epochs=30, batch_size=10), torch.rand(40, 1, 28, 28))
    err = capsys.readouterr().err  # captured: not a terminal
    lines = err.strip().splitlines()
    assert "\r" not in err and 5 <= len(lines) <= 11, err
    assert lines[-1].startswith("  step 120/120 epoch=30 loss=")


def test_history_csv_early_stopping_and_best_checkpoint(tmp_path: Path) -> None:
    """The losses per epoch as CSV beside the checkpoint; training stops once the validation
    loss has not improved for ``early_stopping`` epochs, also when resumed; ``best.pt`` holds
    the epoch of lowest validation loss."""
    import pandas as pd

    torch.manual_seed(0)
    x = torch.rand(64, 1, 6, 6)
    # a learning rate this high makes the validation loss stop improving within a few epochs
    config = TrainConfig(
        epochs=40, batch_size=16, learning_rate=0.05, early_stopping=2, keep_best=True
    )
    path = tmp_path / "checkpoint.pt"
    result = fit(SMALL, config, x[:48], x[48:], checkpoint_path=path, progress=False)
    history = result.history
    losses = [h["val_loss"] for h in history]
    best = int(torch.tensor(losses).argmin())
    assert len(history) < 40 and len(history) - 1 - best == 2  # stopped 2 epochs after the best
    table = pd.read_csv(tmp_path / "history.csv")
    assert table.val_loss.tolist() == pytest.approx(losses) and len(table) == len(history)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best + 1
    assert load_checkpoint(path)["epoch"] == len(history)
    again = fit(SMALL, config, x[:48], x[48:], checkpoint_path=path, resume=True, progress=False)
    assert len(again.history) == len(history)  # stopped already: no epoch more
    with pytest.raises(ConfigError, match="need validation data"):
        fit(SMALL, config, x, None, progress=False)


def test_mixed_precision_is_used_where_asked() -> None:
    """bf16 autocast trains (here on the CPU) and is not fp32 in disguise; auto is fp32 on
    the CPU; fp16 needs CUDA."""
    torch.manual_seed(0)
    x = torch.rand(64, 1, 6, 6)
    runs = {}
    for precision in ("fp32", "auto", "bf16"):
        config = TrainConfig(epochs=2, batch_size=16, precision=precision, device="cpu")
        result = fit(SMALL, config, x, progress=False)
        runs[precision] = result.history[-1]["train_loss"]
        assert result.extra["precision"] == ("bf16" if precision == "bf16" else "fp32")
    assert runs["auto"] == runs["fp32"]
    assert runs["bf16"] != runs["fp32"] and runs["bf16"] == pytest.approx(runs["fp32"], rel=0.05)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fit(SMALL, TrainConfig(epochs=1, precision="fp16", device="cpu"), x, progress=False)


def test_tensorboard_curves(tmp_path: Path) -> None:
    """train.tensorboard writes the epoch's values as TensorBoard scalars beside the run."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    x = torch.rand(32, 1, 6, 6)
    config = TrainConfig(epochs=3, batch_size=16, tensorboard=True)
    result = fit(SMALL, config, x, x, checkpoint_path=tmp_path / "c.pt", progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    curve = events.Scalars("validation/val_loss")
    assert [e.step for e in curve] == [1, 2, 3]
    assert [e.value for e in curve] == pytest.approx([h["val_loss"] for h in result.history])


def test_the_losses_of_every_step(tmp_path: Path) -> None:
    """steps/epoch-NNNN.csv: each step's mean loss terms; they average to the epoch's."""
    import pandas as pd

    torch.manual_seed(0)
    x = torch.rand(40, 1, 6, 6)
    result = fit(
        SMALL,
        TrainConfig(epochs=2, batch_size=16),
        x,
        checkpoint_path=tmp_path / "c.pt",
        progress=False,
    )
    for epoch, record in enumerate(result.history, start=1):
        steps = pd.read_csv(tmp_path / "steps" / f"epoch-{epoch:04d}.csv")
        assert steps.step.tolist() == [1, 2, 3]  # 16 + 16 + 8 samples
        sizes = np.array([16, 16, 8])
        mean = float((steps.train_loss * sizes).sum() / sizes.sum())
        assert mean == pytest.approx(record["train_loss"], rel=1e-12)


def test_cuda_training_uses_deterministic_kernels_and_restores_the_settings() -> None:
    """On CUDA, training runs with cuDNN's deterministic algorithms and no benchmark search
    (a seed fixes a run there too); the caller's settings come back after. On the CPU
    nothing changes. (The flags are only read by CUDA, so this runs without a GPU.)"""
    from patchvae.runtime import deterministic_kernels

    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    try:
        cudnn.deterministic, cudnn.benchmark = False, True  # a caller's own choice
        with deterministic_kernels(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with deterministic_kernels(torch.device("cuda")):
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = before


@needs_cxx
def test_compiled_optimiser_step_trains_like_the_eager_one() -> None:
    """compile: optimizer fuses the optimiser's step with torch.compile: the losses follow
    the eager run's closely (the fused arithmetic may round differently), and the record
    says what ran compiled."""
    x, xv = data(64), data(16, seed=1)
    runs = {
        mode: fit(
            SMALL,
            TrainConfig(epochs=3, batch_size=16, device="cpu", compile=mode),
            x,
            xv,
            progress=False,
        )
        for mode in ("off", "optimizer")
    }
    assert runs["optimizer"].extra["compiled"] == "optimizer"
    assert runs["off"].extra["compiled"] == "off"
    np.testing.assert_allclose(losses(runs["optimizer"]), losses(runs["off"]), rtol=1e-4)


GMM = VAEConfig(
    input_shape=(1, 8, 8), architecture="conv", conv_channels=[4], latent_dim=2, prior="gmm"
)


@needs_cxx
@pytest.mark.parametrize(
    ("model", "settings"),
    [
        (SMALL, {"trim_fraction": 0.2}),  # rmsprop, a trimmed loss, a KL warm-up
        (GMM, {"optimizer": "adam", "gmm_init_epochs": 1, "gmm_pretrain_prior": "gaussian"}),
        (SMALL, {"optimizer": "sgd"}),
    ],
    ids=["mlp-rmsprop-trimmed", "conv-gmm-adam", "mlp-sgd"],
)
def test_the_compiled_whole_step_trains_like_the_eager_one(
    model: VAEConfig, settings: dict[str, object]
) -> None:
    """compile: step runs forward, gradients and update as one graph: the same random
    numbers, the same optimiser, so the losses follow the eager run's; the last, smaller
    batch of each epoch and the steps after the mixture fit resets the prior's optimiser
    state run eagerly, and the run goes on compiled after them."""
    shape = model.input_shape
    x = torch.rand(72, *shape, generator=torch.Generator().manual_seed(0))
    xv = torch.rand(16, *shape, generator=torch.Generator().manual_seed(1))
    runs = {
        mode: fit(
            model,
            TrainConfig(
                epochs=3, batch_size=16, device="cpu", kl_warmup_epochs=2, compile=mode,
                **settings,  # type: ignore[arg-type]
            ),
            x,
            xv,
            progress=False,
        )
        for mode in ("off", "step")
    }  # fmt: skip
    assert runs["step"].extra["compiled"] == "step"
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(
            [h[key] for h in runs["step"].history],
            [h[key] for h in runs["off"].history],
            rtol=1e-4,
        )
    for a, b in zip(runs["step"].model.parameters(), runs["off"].model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@needs_cxx
def test_a_compiled_step_run_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    """The compiled step updates the optimiser's own state, so a checkpoint of a compiled
    run resumes (compiled from its first step) to the uninterrupted run's numbers."""
    x = data(64)
    config = TrainConfig(epochs=3, batch_size=16, device="cpu", compile="step")
    whole = fit(SMALL, config, x, progress=False)
    path = tmp_path / "c.pt"
    fit(SMALL, config.model_copy(update={"epochs": 2}), x, checkpoint_path=path, progress=False)
    resumed = fit(SMALL, config, x, checkpoint_path=path, resume=True, progress=False)
    np.testing.assert_allclose(losses(resumed), losses(whole), rtol=1e-6)


@needs_cxx
def test_the_step_replayed_as_a_cuda_graph_trains_like_the_eager_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On CUDA the compiled step is recorded as a CUDA graph (parameters and optimiser state
    marked static, outputs copied out before the next replay). Here the same path runs on
    the CPU, where inductor leaves out the graph itself: SGD, which keeps no step counts, so
    the CPU needs no capturable optimiser."""
    import patchvae.train.steps

    monkeypatch.setattr(patchvae.train.steps, "cuda_graphs", lambda device: True)
    x, xv = data(72), data(16, seed=1)
    runs = {
        mode: fit(
            SMALL,
            TrainConfig(epochs=3, batch_size=16, device="cpu", optimizer="sgd", compile=mode),
            x,
            xv,
            progress=False,
        )
        for mode in ("off", "step")
    }
    assert runs["step"].extra["compiled"] == "step (CUDA graphs)"
    np.testing.assert_allclose(losses(runs["step"]), losses(runs["off"]), rtol=1e-4)
    step_losses = [h["train_loss"] for h in runs["step"].history]
    assert len(set(step_losses)) == 3  # each epoch's record is its own, not a replay's


def test_a_checkpoint_with_device_step_counts_resumes_on_the_cpu(tmp_path: Path) -> None:
    """A CUDA-graph run saves a capturable optimiser (its step counts on the GPU); resumed
    where the steps run eagerly on the CPU, the counts move back to the CPU and the run
    continues as if never stopped (torch refuses a capturable step on the CPU)."""
    x = data(64)
    config = TrainConfig(epochs=3, batch_size=16, device="cpu")
    whole = fit(SMALL, config, x, progress=False)
    path = tmp_path / "c.pt"
    fit(SMALL, config.model_copy(update={"epochs": 2}), x, checkpoint_path=path, progress=False)
    state = torch.load(path, weights_only=False)
    for group in state["optimizer_state"]["param_groups"]:
        group["capturable"] = True  # as a run with CUDA graphs saves it
    torch.save(state, path)
    resumed = fit(SMALL, config, x, checkpoint_path=path, resume=True, progress=False)
    np.testing.assert_allclose(losses(resumed), losses(whole), rtol=1e-6)


@needs_cxx
def test_the_compiled_validation_pass_scores_as_the_eager_one() -> None:
    """A compiled-step run's validation pass runs its full batches compiled, drawing the
    same latent noise; the last, smaller batch runs eagerly. VAE and denoising AE alike."""
    from patchvae.train.compiled import CompiledEval
    from patchvae.train.steps import evaluate

    dae = VAEConfig(
        input_shape=(1, 8, 8), architecture="dae", conv_channels=[4], noise_std=0.2, noise_grid=2
    )
    for config in (SMALL, dae):
        model = build_model(config)
        x = torch.rand(40, *config.input_shape, generator=torch.Generator().manual_seed(2))
        eager = evaluate(model, x, 16, seed=5)
        compiled = CompiledEval(model, 16)
        got = evaluate(model, x, 16, seed=5, compiled=compiled)
        assert compiled.compiled
        for key in ("loss", "recon", "kl"):
            assert got[key] == pytest.approx(eager[key], rel=1e-5)
        other = evaluate(model, x, 16, seed=6, compiled=compiled)
        assert other["loss"] != pytest.approx(got["loss"], rel=1e-6)  # the noise is drawn


def test_a_validation_pass_that_fails_to_compile_scores_as_the_eager_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the compiled validation pass fails, one warning, and the batches run eagerly
    with the noise already drawn: the same figures as an eager pass."""
    from patchvae.train.compiled import CompiledEval
    from patchvae.train.steps import evaluate

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    compiled_functions = patchvae.train.compiled._compiled_functions
    monkeypatch.setitem(compiled_functions, (patchvae.train.compiled._eval_sums, False), failing)
    model = build_model(SMALL)
    x = torch.rand(40, *SMALL.input_shape, generator=torch.Generator().manual_seed(2))
    eager = evaluate(model, x, 16, seed=5)
    compiled = CompiledEval(model, 16)
    with pytest.warns(UserWarning, match="compiling the validation pass failed"):
        got = evaluate(model, x, 16, seed=5, compiled=compiled)
    assert not compiled.compiled and got == eager


def test_the_compiled_step_draws_the_eager_steps_random_numbers() -> None:
    """A compiled step draws its noise outside the graph with ``draw_noise``: the same
    numbers a forward pass draws from the same generator, for a VAE and a denoising AE."""
    dae = VAEConfig(
        input_shape=(1, 8, 8), architecture="dae", conv_channels=[4], noise_std=0.2, noise_grid=2
    )
    for config in (SMALL, dae):
        model = build_model(config)
        x = torch.rand(5, *config.input_shape)
        drawn = model(x, generator=torch.Generator().manual_seed(3))
        noise = model.draw_noise(x, torch.Generator().manual_seed(3))
        given = model(x, noise=noise)
        torch.testing.assert_close(given.recon, drawn.recon, rtol=0, atol=0)
        other = model(x, noise=model.draw_noise(x, torch.Generator().manual_seed(4)))
        assert not torch.equal(other.recon, drawn.recon)


def test_compile_step_where_it_cannot_run_compiles_the_optimiser_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training with labels is not done by the whole-step graph: one warning, and the
    optimiser's step is compiled instead (torch.compile stubbed: no compiling here)."""
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    model = SMALL.model_copy(update={"classifier_classes": 2})
    y = torch.tensor([0, 1, -1, -1] * 8)
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", compile="step")
    with pytest.warns(UserWarning, match="compile: step .* not with training with labels"):
        result = fit(model, config, data(32), progress=False, y_train=y)
    assert result.extra["compiled"] == "optimizer"
    # nor training with cluster targets, whose loss needs each sample's position
    mixture = SMALL.model_copy(update={"prior": "gmm", "n_clusters": 2})
    taught = config.model_copy(update={"gmm_init_epochs": 1, "gmm_cluster_weight": 1.0})
    with pytest.warns(UserWarning, match="not with cluster targets"):
        result = fit(mixture, taught, data(32), progress=False)
    assert result.extra["compiled"] == "optimizer"


@pytest.mark.parametrize("mode", ["optimizer", "step"])
def test_a_step_that_fails_to_compile_falls_back_to_eager(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Where compiling fails (no C++ compiler, say), training goes on with the eager step
    and the same numbers, after one warning; the record says it did not run compiled."""

    def failing(function, **kwargs):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")

        return call

    x = data(64)
    eager = fit(SMALL, TrainConfig(epochs=2, batch_size=16, device="cpu"), x, progress=False)
    monkeypatch.setattr(torch, "compile", failing)
    monkeypatch.setattr(patchvae.train.compiled, "_compiled_functions", {})  # none compiled yet
    with pytest.warns(UserWarning, match="compile: compiling .*No working C\\+\\+ compiler"):
        fallback = fit(
            SMALL,
            TrainConfig(epochs=2, batch_size=16, device="cpu", compile=mode),
            x,
            progress=False,
        )
    assert fallback.extra["compiled"] == "off"
    assert losses(fallback) == losses(eager)
