"""The adding problem: its declared baseline, its target, its seeding."""

import torch

from study.tasks.adding import Adding


def test_baseline_matches_a_monte_carlo_estimate():
    """The best memoryless predictor outputs the mean target; its MSE is the declared 1/6."""
    task = Adding(length=50)
    b = task.sample(200_000, torch.Generator().manual_seed(0))
    y = b.y.flatten().double()
    mse = (y - 1.0).pow(2)  # the best constant is E[X1 + X2] = 1, known in closed form
    est, se = mse.mean().item(), mse.std().item() / len(mse) ** 0.5
    assert abs(est - task.baseline) < 4 * se
    # and no other constant does better: the sample-optimal constant is the sample mean
    assert abs(y.mean().item() - 1.0) < 4 * y.std().item() / len(y) ** 0.5


def test_oracle_reading_the_evidence_positions_is_exact():
    task = Adding(length=30)
    b = task.sample(512, torch.Generator().manual_seed(1))
    marked = b.x[..., 1] == 1
    assert torch.equal(marked.sum(dim=1), torch.full((512,), 2))
    oracle = b.x[..., 0].gather(1, b.evidence).sum(dim=1)
    assert torch.equal(oracle, b.y.flatten())
    assert torch.equal(torch.where(marked)[1].view(512, 2), b.evidence)
    assert bool((b.evidence[:, 0] < 15).all() and (b.evidence[:, 1] >= 15).all())
    loss = task.loss(oracle.view(-1, 1, 1), b)
    assert float(loss.max()) == 0.0


def test_seeding_shapes_and_dtypes():
    task = Adding(length=20)
    a = task.sample(8, torch.Generator().manual_seed(5))
    b = task.sample(8, torch.Generator().manual_seed(5))
    c = task.sample(8, torch.Generator().manual_seed(6))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (8, 20, 2) and a.x.dtype == torch.float32
    assert a.y.shape == (8, 1, 1) and a.evidence.dtype == torch.long
