"""FlatRMSprop and FlatAdam: torch's optimisers over one flat buffer give torch's numbers, bit
for bit."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from patchvae.train.flat import FlatAdam, FlatRMSprop, _tiny_is_negligible

SETTINGS: dict[str, Any] = {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}
# (flat optimiser, torch's, settings, the state tensor that subnormal numbers reach)
PAIRS: dict[str, tuple[Any, Any, dict[str, Any], str]] = {
    "rmsprop": (FlatRMSprop, torch.optim.RMSprop, SETTINGS, "square_avg"),
    "adam": (FlatAdam, torch.optim.Adam, {"lr": 1e-3, "eps": 1e-7}, "exp_avg_sq"),
}


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 30))
    net.register_parameter("unused", nn.Parameter(torch.ones(3)))  # never gets a gradient
    return net


def _train(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.rand(16, 30, generator=generator)
        x[:, :5] = 0  # inputs that are always 0, as MNIST's border pixels are
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("with_unused", [False, True])
def test_the_same_numbers_as_torch(kind: str, with_unused: bool) -> None:
    """Every parameter equal, bit for bit, after 60 steps; with a parameter that never gets a
    gradient (torch's own step then runs on the same state) too."""
    ours, theirs = _net(), _net()
    params = (
        (lambda net: list(net.parameters()))
        if with_unused
        else (lambda net: [p for name, p in net.named_parameters() if name != "unused"])
    )
    flat_kind, torch_kind, settings, _ = PAIRS[kind]
    flat = flat_kind(params(ours), **settings)
    _train(ours, flat, 60, seed=1)
    _train(theirs, torch_kind(params(theirs), foreach=True, **settings), 60, seed=1)
    assert _same(ours, theirs)
    assert (flat._flat is None) == with_unused  # the flat step ran where it could


@pytest.mark.parametrize("kind", PAIRS)
def test_subnormal_running_averages_give_torchs_numbers(kind: str) -> None:
    """Running averages below the smallest normal float (whose square root is slow) give
    the same update as torch's: the floor changes nothing where eps is not tiny."""
    ours, theirs = _net(), _net()
    for net in (ours, theirs):
        net.unused.requires_grad_(False)
    used = lambda net: [p for p in net.parameters() if p.requires_grad]  # noqa: E731
    flat_kind, torch_kind, settings, average_name = PAIRS[kind]
    flat = flat_kind(used(ours), **settings)
    plain = torch_kind(used(theirs), foreach=True, **settings)
    _train(ours, flat, 1, seed=2)
    _train(theirs, plain, 1, seed=2)
    for optimizer in (flat, plain):  # a quarter of every running average subnormal
        for p in used(ours if optimizer is flat else theirs):
            average = optimizer.state[p][average_name].view(-1)
            average[: average.numel() // 4] = 1e-41
    assert flat.state[used(ours)[0]][average_name].view(-1)[0] == pytest.approx(1e-41)
    _train(ours, flat, 5, seed=3)
    _train(theirs, plain, 5, seed=3)
    assert _same(ours, theirs)
    assert _tiny_is_negligible(1e-7, torch.float32)
    assert not _tiny_is_negligible(1e-13, torch.float32)  # then torch's own step runs


@pytest.mark.parametrize("kind", PAIRS)
def test_state_dict_moves_between_flat_and_torch(kind: str) -> None:
    """A flat optimiser's state loads into torch's RMSprop and back, and training on from
    either gives the same numbers as training on without a break."""
    straight, net = _net(), _net()
    params = lambda net: [p for n, p in net.named_parameters() if n != "unused"]  # noqa: E731
    flat_kind, torch_kind, settings, _ = PAIRS[kind]
    straight_opt = flat_kind(params(straight), **settings)
    _train(straight, straight_opt, 20, seed=4)
    _train(straight, straight_opt, 20, seed=5)

    flat = flat_kind(params(net), **settings)
    _train(net, flat, 20, seed=4)
    state = copy.deepcopy(flat.state_dict())
    torch_state = {"rmsprop": {"step", "square_avg"}, "adam": {"step", "exp_avg", "exp_avg_sq"}}
    assert set(state["state"][0]) == torch_state[kind]
    assert float(state["state"][0]["step"]) == 20
    moved = _net()
    moved.load_state_dict(net.state_dict())
    torch_opt = torch_kind(params(moved), foreach=True, **settings)
    torch_opt.load_state_dict(state)
    back = flat_kind(params(moved), **settings)
    back.load_state_dict(torch_opt.state_dict())
    _train(moved, back, 20, seed=5)
    assert _same(moved, straight)


def test_parameters_given_new_data_are_taken_up() -> None:
    """Parameter data replaced outside the optimiser (as a fitted mixture prior is set) is
    what the next step updates."""
    net = _net()
    params = [p for n, p in net.named_parameters() if n != "unused"]
    flat = FlatRMSprop(params, **SETTINGS)
    _train(net, flat, 2, seed=6)
    params[0].data = torch.full_like(params[0], 0.5)
    _train(net, flat, 1, seed=7)
    assert params[0].data_ptr() != 0 and (params[0] - 0.5).abs().max() < 0.01
    assert (params[0] != 0.5).any()  # updated, from the new values
