"""Tests of the evaluation: SSIM, held-out set, nearest neighbours, matching, premises."""
import math
import pytest
import torch
import torch.nn.functional as F

from tldr import (Classifier, TLDRError, grad_norms_loop, heldout_indices, nearest, nearest_grid,
                  one_to_one_matches, premises, samples_ortho, ssim, training_likeness, within_class_ssim)


def ssim_loops(x, y):
    """SSIM of two [C, H, W] images, float64, written out position by position."""
    x, y = x.double(), y.double()
    c, h, w = x.shape
    # 2-D Gaussian window built directly: w[u, v] ~ exp(-((u-5)^2 + (v-5)^2) / (2 * 1.5^2))
    u = torch.arange(11, dtype=torch.float64) - 5
    win = torch.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * 1.5 ** 2))
    win = win / win.sum()
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    per_channel = []
    for ch in range(c):
        values = []
        for p in range(h - 10):
            for q in range(w - 10):
                px, py = x[ch, p:p + 11, q:q + 11], y[ch, p:p + 11, q:q + 11]
                mx, my = (win * px).sum(), (win * py).sum()
                vx, vy = (win * (px - mx) ** 2).sum(), (win * (py - my) ** 2).sum()
                cxy = (win * (px - mx) * (py - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
        per_channel.append(sum(values) / len(values))
    return sum(per_channel) / c


def smooth_images(n, c=1, side=16, seed=0):
    """Random images in [0, 1] with some structure (blurred noise), so SSIM spreads out."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(n, c, side + 2, side + 2, generator=g), 3, 1)
    return (x - x.amin((1, 2, 3), keepdim=True)) / (x.amax((1, 2, 3), keepdim=True) - x.amin((1, 2, 3), keepdim=True))


def test_ssim_matches_float64_loops():
    # 14x14 with an 11x11 window: 4x4 positions; two channels, averaged.
    x, y = smooth_images(3, c=2, side=14, seed=1), smooth_images(3, c=2, side=14, seed=2)
    expected = torch.stack([ssim_loops(a, b) for a, b in zip(x, y)])
    assert torch.allclose(ssim(x.double(), y.double()), expected, atol=1e-12, rtol=0)
    assert torch.allclose(ssim(x, y).double(), expected, atol=1e-5, rtol=0)  # float32


def test_ssim_identical_is_one_and_constant_images_by_hand():
    x = smooth_images(4, side=28)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    # Constant images a and b: mu = a, b; sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = (torch.full((1, 1, 14, 14), v, dtype=torch.float64) for v in (0.2, 0.6))
    # (2 * 0.2 * 0.6 + 0.0001) / (0.04 + 0.36 + 0.0001) = 0.2401 / 0.4001
    assert ssim(a, b).item() == pytest.approx(0.2401 / 0.4001, abs=1e-12)


def test_ssim_broadcasts_one_image_against_many():
    x, y = smooth_images(1, seed=3), smooth_images(5, seed=4)
    assert torch.allclose(ssim(x, y), ssim(x.expand(5, -1, -1, -1), y))


def test_heldout_is_disjoint_balanced_and_reproducible():
    labels = torch.randint(10, (2000,), generator=torch.Generator().manual_seed(0))
    subset = torch.randperm(2000, generator=torch.Generator().manual_seed(1))[:300].sort().values
    held = heldout_indices(labels, subset, seed=7)
    assert len(set(held.tolist()) & set(subset.tolist())) == 0
    assert len(held.unique()) == len(held) == 300
    assert torch.equal(torch.bincount(labels[held], minlength=10), torch.bincount(labels[subset], minlength=10))
    assert torch.equal(held, heldout_indices(labels, subset, seed=7))
    assert not torch.equal(held, heldout_indices(labels, subset, seed=8))


def test_heldout_refuses_when_the_rest_is_too_small():
    labels = torch.arange(100) % 10
    with pytest.raises(TLDRError, match="no held-out set"):
        heldout_indices(labels, torch.arange(60), seed=0)  # 6 of each class in, 4 left out


def brute_force_nearest(gen, gen_labels, ref, ref_labels):
    best_s, best_i = [], []
    for x, y in zip(gen, gen_labels):
        same = (ref_labels == y).nonzero().squeeze(1)
        s = ssim(x[None], ref[same])
        best_s.append(s.max())
        best_i.append(same[s.argmax()])
    return torch.stack(best_s), torch.stack(best_i)


def test_nearest_with_top_k_of_the_class_size_is_brute_force():
    gen, ref = smooth_images(12, seed=10), smooth_images(40, seed=11)
    gen_labels, ref_labels = torch.arange(12) % 3, torch.arange(40) % 3  # classes of 13-14 refs
    s, i = nearest(gen, gen_labels, ref, ref_labels, top_k=14, max_pairs=30)  # several chunks
    want_s, want_i = brute_force_nearest(gen, gen_labels, ref, ref_labels)
    assert torch.allclose(s[:, 0], want_s) and torch.equal(i[:, 0], want_i)
    assert torch.equal(ref_labels[i[:, :13]], gen_labels[:, None].expand(-1, 13))  # same class only
    assert (s[:, :-1] >= s[:, 1:]).all()  # best first
    # Class 0 has 14 references, classes 1 and 2 have 13: their last column is padding.
    assert (i[gen_labels > 0, 13] == -1).all() and torch.isinf(s[gen_labels > 0, 13]).all()


def test_nearest_prefilter_never_beats_brute_force():
    gen, ref = smooth_images(6, seed=12), smooth_images(30, seed=13)
    s, _ = nearest(gen, torch.zeros(6).long(), ref, torch.zeros(30).long(), top_k=3)
    want, _ = brute_force_nearest(gen, torch.zeros(6).long(), ref, torch.zeros(30).long())
    assert (s[:, 0] <= want + 1e-6).all()


def test_nearest_refuses_a_class_without_references():
    with pytest.raises(TLDRError, match="class 2"):
        nearest(smooth_images(1), torch.tensor([2]), smooth_images(3), torch.tensor([0, 0, 1]))


def test_one_to_one_matches_is_a_maximum_matching():
    # Generated A's candidates: training 1 (SSIM 0.9), training 2 (0.5); B's: training 1 (0.6), 3 (0.1).
    # Greedy by decreasing SSIM takes A-1 and leaves B nothing (1 match); the maximum is A-2, B-1 (2).
    ssims = torch.tensor([[0.9, 0.5], [0.6, 0.1]])
    indices = torch.tensor([[1, 2], [1, 3]])
    assert one_to_one_matches(ssims, indices, 0.4) == 2
    assert one_to_one_matches(ssims, indices, 0.55) == 1   # only A-1 and B-1 remain: one training image
    assert one_to_one_matches(ssims, indices, 0.95) == 0
    # Padding from nearest() (-inf, -1) is never an edge.
    assert one_to_one_matches(torch.tensor([[0.8, -math.inf]]), torch.tensor([[0, -1]])) == 1


def test_training_likeness_on_copies_of_the_training_images():
    train, held = smooth_images(20, seed=20), smooth_images(20, seed=21)
    labels = torch.arange(20) % 2
    gen, gen_labels = train[:8], labels[:8]  # exact copies: a perfect leak
    r = training_likeness(gen, gen_labels, train, labels, held, labels, top_k=5)
    assert r["ssim_train"] == pytest.approx(1, abs=1e-5) and r["ssim_heldout"] < 0.9
    assert r["win_rate"] == 1 and r["matched_train_040"] == 8
    assert torch.equal(r["nearest_train"], torch.arange(8))
    # Held-out = training: every match ties, and a tie counts half.
    r = training_likeness(gen, gen_labels, train, labels, train, labels, top_k=5)
    assert r["win_rate"] == 0.5
    grid = nearest_grid(gen, train, held, r)
    assert grid.shape == (24, 1, 16, 16) and torch.equal(grid[1::3], train[:8])


def test_premises_match_a_per_image_computation():
    torch.manual_seed(0)
    model = Classifier(channels=1, image_size=8, width=4, hidden=8)
    images, labels = torch.rand(5, 1, 8, 8), torch.randint(10, (5,))
    got = premises(model, images, labels, batch_size=2)  # batches of 2, 2, 1
    conf, in_norm = [], []
    for x, y in zip(images, labels):
        x = x[None].requires_grad_(True)
        logits = model(x)[0]
        conf.append(logits.softmax(1)[0, y])
        in_norm.append(torch.autograd.grad(F.cross_entropy(logits, y[None]), x)[0].norm())
    w_norm = grad_norms_loop(model, images, labels)  # model is in eval mode now
    assert got["confidence"] == pytest.approx(torch.stack(conf).mean().item(), rel=1e-5)
    assert got["input_grad_norm"] == pytest.approx(torch.stack(in_norm).mean().item(), rel=1e-5)
    assert got["weight_grad_norm"] == pytest.approx(w_norm.mean().item(), rel=1e-5)


def test_samples_ortho_matches_a_float64_pair_loop():
    torch.manual_seed(0)
    model = Classifier(channels=1, image_size=8, width=4, hidden=8).eval()
    images = torch.rand(7, 1, 8, 8)
    got = samples_ortho(model, images, batch_size=3)  # features in batches of 3, 3, 1, then all pairs at once
    with torch.no_grad():
        feats = [model(x[None])[1][0].double() for x in images]  # one image at a time
    total = 0.0
    for i, a in enumerate(feats):  # 1/N^2 sum_{i,j} (cos(a_i, a_j) - delta_ij)^2
        for j, b in enumerate(feats):
            total += ((a @ b / (a.norm() * b.norm())).item() - (i == j)) ** 2
    assert got == pytest.approx(total / len(feats) ** 2, rel=1e-5)
    assert got != pytest.approx(samples_ortho(model, torch.rand(7, 1, 8, 8)), rel=1e-3)  # depends on the images


def test_samples_ortho_by_hand():
    class Flat(torch.nn.Module):  # features = the image's pixels
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # samples_ortho reads the device from a parameter

        def forward(self, x):
            return x.flatten(1), x.flatten(1)
    t = lambda rows: torch.tensor(rows, dtype=torch.float32)[:, None, None, :]  # [N, 1, 1, D]
    assert samples_ortho(Flat(), t([[2, 0], [0, 1]])) == pytest.approx(0.0)  # orthogonal
    assert samples_ortho(Flat(), t([[1, 0], [3, 0]])) == pytest.approx(0.5)  # (1 + 1) / 2^2: the two off-diagonal
    assert samples_ortho(Flat(), t([[1, 0], [1, 1], [0, 1]])) == pytest.approx(4 * 0.5 / 9)  # four pairs at cos^2 1/2


def test_within_class_ssim_by_hand_and_reference():
    a, b = torch.rand(2, 1, 16, 16, dtype=torch.float64)  # two [C, H, W] images
    # one class of identical images scores 1; a class of two images scores SSIM(a, b)
    same = torch.stack([a, a, a])
    assert within_class_ssim(same, torch.zeros(3, dtype=torch.long)) == pytest.approx(1.0)
    pair = torch.stack([a, b])
    assert within_class_ssim(pair, torch.zeros(2, dtype=torch.long)) == pytest.approx(ssim(a[None], b[None]).item())
    # two classes: the mean of the two class means; a class of one image is skipped
    images = torch.cat([same, pair, a[None]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    expected = (1.0 + ssim(a[None], b[None]).item()) / 2
    assert within_class_ssim(images, labels) == pytest.approx(expected)
    # a loop over pairs; per_class = 2 keeps the first and the last image of each class
    x = torch.rand(6, 1, 16, 16, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    loop = [sum(ssim(x[[i]], x[[j]]).item() for i in idx for j in idx if i != j) / 2 for idx in ([0, 4], [1, 5])]
    assert within_class_ssim(x, y, per_class=2) == pytest.approx(sum(loop) / 2)


def test_training_likeness_without_a_held_out_set():
    torch.manual_seed(0)
    gen, train, held = torch.rand(12, 1, 16, 16), torch.rand(20, 1, 16, 16), torch.rand(20, 1, 16, 16)
    gl, tl, hl = torch.arange(12) % 2, torch.arange(20) % 2, torch.arange(20) % 2
    both = training_likeness(gen, gl, train, tl, held, hl, top_k=5)
    alone = training_likeness(gen, gl, train, tl, top_k=5)
    for key in ("ssim_train", "matched_train_040"):
        assert alone[key] == both[key]
    assert torch.equal(alone["nearest_train"], both["nearest_train"])
    assert all(alone[key] is None for key in ("ssim_heldout", "win_rate", "matched_heldout_040", "nearest_heldout"))
    assert all(both[key] is not None for key in ("ssim_heldout", "win_rate", "matched_heldout_040", "nearest_heldout"))
