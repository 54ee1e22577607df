"""Tests of the math in tldr.py (CPU only, a few seconds).

Every loss is checked against an independent float64 re-derivation written here from
the paper's equation (plain loops, no call to the function under test), value AND
gradient, plus one case small enough to work out by hand. L_Grad is checked three
ways (torch.func, a per-image loop, the fast path) and against a gradient built by hand.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tldr

N = tldr.NUM_CLASSES
SIZES = [(1, 28), (3, 32)]  # (channels, image side): MNIST-like, CIFAR/SVHN-like


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def value_and_grads(fn, *inputs):
    """fn(*inputs) and its gradient w.r.t. every floating-point input (fresh leaves)."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [x for x in leaves if x.requires_grad])
    return out.detach(), grads


def check_against_reference(fn, reference, *inputs):
    """Same value and same input gradients, in float64, to ~1e-10."""
    value, grads = value_and_grads(fn, *inputs)
    ref_value, ref_grads = value_and_grads(reference, *inputs)
    assert value.dtype == torch.float64 and value.dim() == 0
    assert_close(value, ref_value)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        assert g_ref.abs().sum() > 0  # a gradient of zero would make the comparison empty
        assert_close(g, g_ref)


# ---------------------------------------------------------------------------------
# Independent re-derivations of each term, straight from the paper's equations.
# Deliberately slow and explicit: Python loops over scalars.
# ---------------------------------------------------------------------------------

def ref_kl(p, logits):
    # D_KL(P || Q) = sum_i P(i) log(P(i) / Q(i)),  Q(i) = exp(l_i) / sum_j exp(l_j); mean over batch
    total = 0
    for p_row, l_row in zip(p, logits):
        z = sum(torch.exp(l) for l in l_row)
        for p_i, l_i in zip(p_row, l_row):
            if p_i > 0:  # 0 log 0 = 0
                total = total + p_i * torch.log(p_i / (torch.exp(l_i) / z))
    return total / len(p)


def ref_ce(logits, labels):
    # -sum_i y_i log(yhat_i) with y one-hot: -log(softmax(l)[label]); mean over batch
    total = 0
    for l_row, y in zip(logits, labels):
        total = total - torch.log(torch.exp(l_row[y]) / sum(torch.exp(l) for l in l_row))
    return total / len(logits)


def ref_cosine(features):
    # 1/(N(N-1)) sum_{i != j} a_i.a_j / (|a_i| |a_j|)
    n = len(features)
    total = 0
    for i in range(n):
        for j in range(n):
            if i != j:
                a, b = features[i], features[j]
                total = total + torch.dot(a, b) / (torch.sqrt(torch.dot(a, a)) * torch.sqrt(torch.dot(b, b)))
    return total / (n * (n - 1))


def ref_ortho(features):
    # 1/N^2 sum_{i,j} (G_ij - delta_ij)^2,  G_ij = cos(theta_ij) (L2-normalised features)
    n = len(features)
    total = 0
    for i in range(n):
        for j in range(n):
            a, b = features[i], features[j]
            g_ij = torch.dot(a, b) / (torch.sqrt(torch.dot(a, a)) * torch.sqrt(torch.dot(b, b)))
            total = total + (g_ij - (1.0 if i == j else 0.0)) ** 2
    return total / n ** 2


def ref_var(images):
    # 1/N sum_i sum_{c,h,w} (I[h+1,w] - I[h,w])^2 + (I[h,w+1] - I[h,w])^2, pairs inside the image only
    B, C, H, W = images.shape
    total = 0
    for i in range(B):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    if h + 1 < H:
                        total = total + (images[i, c, h + 1, w] - images[i, c, h, w]) ** 2
                    if w + 1 < W:
                        total = total + (images[i, c, h, w + 1] - images[i, c, h, w]) ** 2
    return total / B


def ref_pix_paper(images):
    # The paper's L_Pix: sum max(0, -I) + sum max(0, I - 1) over every pixel of the batch
    total = 0
    for x in images.flatten():
        if x < 0:
            total = total - x
        elif x > 1:
            total = total + (x - 1)
    return total


def ref_bn(clf, images, dropout=True):
    # L_BN = sum_l ||mean_b(h_l) - mu_l|| + ||var_b(h_l) - sigma_l^2||, h_l read by forward hooks
    # on the batch-norm layers during an ordinary forward pass (not by re-running the layers),
    # with the dropout modules in training mode (dropout=True, as tldr.bn_loss) or not.
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append((m, i[0])))
             for m in clf.modules() if isinstance(m, nn.BatchNorm2d)]
    drops = [m for m in clf.modules() if isinstance(m, nn.Dropout)]
    for m in drops:
        m.train(dropout)
    clf(images)
    for m in drops:
        m.eval()
    for h in hooks:
        h.remove()
    total = 0
    for m, h in inputs:
        n = h.shape[0] * h.shape[2] * h.shape[3]
        mean = h.sum((0, 2, 3)) / n                                   # per channel
        var = ((h - mean[None, :, None, None]) ** 2).sum((0, 2, 3)) / n  # biased, as batch norm
        total = total + torch.sqrt(((mean - m.running_mean) ** 2).sum()) \
            + torch.sqrt(((var - m.running_var) ** 2).sum())
    return total


def ref_weighted_sum(t, w):
    # L_Recon = alpha L_KL + alpha' L_KL^pert + beta L_CE + beta' L_CE^pert
    #         + gamma L_Cosine + delta L_Ortho + eta1 L_Var + eta2 L_Pix + eta3 L_Grad + eta_bn L_BN
    return (w["alpha"] * t["kl"] + w["alpha_pert"] * t["kl_pert"] + w["beta"] * t["ce"]
            + w["beta_pert"] * t["ce_pert"] + w["gamma"] * t["cos"] + w["delta"] * t["ortho"]
            + w["eta1"] * t["var"] + w["eta2"] * t["pix"] + w["eta3"] * t["grad"] + w["eta_bn"] * t["bn"])


# ---------------------------------------------------------------------------------
# 3.3 Inversion losses
# ---------------------------------------------------------------------------------

def test_kl_matches_reference_soft_p():
    p = torch.randn(6, N, dtype=torch.float64).softmax(1)  # no zeros
    logits = 3 * torch.randn(6, N, dtype=torch.float64)
    check_against_reference(tldr.kl_loss, ref_kl, p, logits)  # gradients w.r.t. P and logits


def test_kl_matches_reference_p_with_zeros():
    # One-hot rows and a row with zeros; gradient w.r.t. the logits only (P is never learnt,
    # and d(P log P)/dP is unbounded at P = 0).
    p = torch.tensor([[0.0, 0.3, 0.0, 0.7] + [0.0] * (N - 4)], dtype=torch.float64)
    p = torch.cat([p, F.one_hot(torch.tensor([2, 9]), N).double()])
    logits = torch.randn(3, N, dtype=torch.float64, requires_grad=True)
    assert_close(tldr.kl_loss(p, logits), ref_kl(p, logits))
    g, = torch.autograd.grad(tldr.kl_loss(p, logits), logits)
    g_ref, = torch.autograd.grad(ref_kl(p, logits), logits)
    assert_close(g, g_ref)


def test_kl_by_hand_and_direction():
    # P = [1, 0], Q = softmax([0, 0]) = [1/2, 1/2]:  1 * log(1 / (1/2)) = log 2
    assert_close(tldr.kl_loss(torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                              torch.zeros(1, 2, dtype=torch.float64)),
                 torch.tensor(math.log(2), dtype=torch.float64))
    # Asymmetric case: P = [0.9, 0.1], Q = [0.5, 0.5]
    #   D(P||Q) = 0.9 log(0.9/0.5) + 0.1 log(0.1/0.5) = 0.9 log 1.8 + 0.1 log 0.2 ~ 0.368
    #   D(Q||P) = 0.5 log(0.5/0.9) + 0.5 log(0.5/0.1) = 0.5 log(5/9) + 0.5 log 5 ~ 0.511
    p = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    logits = torch.zeros(1, 2, dtype=torch.float64)
    p_q = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    q_p = 0.5 * math.log(5 / 9) + 0.5 * math.log(5)
    assert abs(p_q - q_p) > 0.1
    assert_close(tldr.kl_loss(p, logits), torch.tensor(p_q, dtype=torch.float64))
    # F.kl_div(input=log Q, target=P) is D(P||Q), the same direction
    assert_close(tldr.kl_loss(p, logits), F.kl_div(logits.log_softmax(1), p, reduction="batchmean"))


def test_kl_equals_ce_for_one_hot_p():
    logits = torch.randn(5, N, dtype=torch.float64)
    labels = torch.tensor([0, 3, 3, 7, 9])
    assert_close(tldr.kl_loss(F.one_hot(labels, N).double(), logits), tldr.ce_loss(logits, labels))


def test_ce_matches_reference():
    logits = 3 * torch.randn(6, N, dtype=torch.float64)
    labels = torch.randint(N, (6,))
    check_against_reference(tldr.ce_loss, ref_ce, logits, labels)


def test_ce_by_hand():
    # logits [0, 0], label 0: -log(1/2) = log 2.  logits [log 3, 0], label 0: -log(3/4) = log(4/3)
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]], dtype=torch.float64)
    assert_close(tldr.ce_loss(logits[:1], torch.tensor([0])), torch.tensor(math.log(2), dtype=torch.float64))
    assert_close(tldr.ce_loss(logits[1:], torch.tensor([0])), torch.tensor(math.log(4 / 3), dtype=torch.float64))


def test_cosine_matches_reference():
    check_against_reference(tldr.cosine_loss, ref_cosine, torch.randn(5, 7, dtype=torch.float64))


def test_cosine_by_hand():
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    assert_close(tldr.cosine_loss(t([[1, 0], [0, 2]])), t(0.0))   # 90 degrees: cos = 0
    assert_close(tldr.cosine_loss(t([[1, 0], [2, 0]])), t(1.0))   # same direction: 1, length ignored
    assert_close(tldr.cosine_loss(t([[1, 0], [-3, 0]])), t(-1.0))  # opposite: -1
    # [1,0], [0,1], [1,1]: pair cosines 0, 1/sqrt2, 1/sqrt2; ordered pairs sum 2*sqrt2; / (3*2)
    assert_close(tldr.cosine_loss(t([[1, 0], [0, 1], [1, 1]])), t(math.sqrt(2) / 3))


def test_ortho_matches_reference():
    check_against_reference(tldr.ortho_loss, ref_ortho, torch.randn(5, 7, dtype=torch.float64))


def test_ortho_by_hand():
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    assert_close(tldr.ortho_loss(t([[3, 0], [0, 1]])), t(0.0))  # orthogonal: G = I (after normalising)
    # parallel: G = [[1, 1], [1, 1]], (G - I)^2 has two off-diagonal ones; / 2^2 = 0.5
    assert_close(tldr.ortho_loss(t([[1, 0], [2, 0]])), t(0.5))


# ---------------------------------------------------------------------------------
# 3.4 Reconstruction losses
# ---------------------------------------------------------------------------------

def test_var_matches_reference():
    check_against_reference(tldr.var_loss, ref_var, torch.randn(2, 3, 4, 5, dtype=torch.float64))


def test_var_by_hand_and_batch_mean():
    # image [[0, 1], [3, 5]]: vertical (3-0)^2 + (5-1)^2 = 25, horizontal (1-0)^2 + (5-3)^2 = 5
    img = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]], dtype=torch.float64)  # [1, 1, 2, 2]
    assert_close(tldr.var_loss(img), torch.tensor(30.0, dtype=torch.float64))
    # mean over the batch: adding a flat image halves it; the same image twice keeps it
    assert_close(tldr.var_loss(torch.cat([img, torch.zeros_like(img)])), torch.tensor(15.0, dtype=torch.float64))
    assert_close(tldr.var_loss(torch.cat([img, img])), torch.tensor(30.0, dtype=torch.float64))


def test_pix_matches_reference_divided_by_batch():
    # Deviation (documented in tldr.py): the paper's sum over the batch, divided by B.
    images = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 3 - 1  # in [-1, 2]: all three regions
    check_against_reference(tldr.pix_loss, lambda x: ref_pix_paper(x) / len(x), images)


def test_pix_by_hand_and_batch_mean():
    # pixels -1.5, 2, 0.5, 1: max(0, 1.5) + max(0, 2 - 1) + 0 + 0 = 2.5
    img = torch.tensor([[[[-1.5, 2.0], [0.5, 1.0]]]], dtype=torch.float64)
    assert_close(tldr.pix_loss(img), torch.tensor(2.5, dtype=torch.float64))
    # B = 2 with a valid second image: the paper's plain sum stays 2.5, ours is 2.5 / 2
    batch = torch.cat([img, torch.full_like(img, 0.5)])
    assert_close(ref_pix_paper(batch), torch.tensor(2.5, dtype=torch.float64))
    assert_close(tldr.pix_loss(batch), torch.tensor(1.25, dtype=torch.float64))
    assert_close(tldr.pix_loss(torch.cat([img, img, img])), torch.tensor(2.5, dtype=torch.float64))


def test_bn_matches_reference():
    clf = float64_classifier(1, 28)
    images = torch.rand(5, 1, 28, 28, dtype=torch.float64) * 1.2 - 0.1
    # Both draw the same dropout masks: the same seed, the first dropout layer first.
    check_against_reference(lambda x: (torch.manual_seed(0), tldr.bn_loss(clf, x))[1],
                            lambda x: (torch.manual_seed(0), ref_bn(clf, x))[1], images)
    # and the dropout is on: without it the second layer's statistics differ
    torch.manual_seed(0)
    assert (tldr.bn_loss(clf, images) - ref_bn(clf, images, dropout=False)).abs() > 1e-3


def test_bn_with_dropout_reads_statistics_the_way_training_stored_them():
    # Running statistics gathered in training mode (dropout on) on a fixed batch x: L_BN of x
    # itself is then near 0 with dropout on, and larger with it off (less variance after it).
    torch.manual_seed(0)
    clf = tldr.Classifier(channels=1, image_size=8, width=4, hidden=8, dropout=0.5).double()
    for m in clf.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running statistics = plain average over the passes
    x = torch.rand(256, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        clf.train()
        for _ in range(50):
            clf(x)
        clf.eval()
        with_dropout = torch.stack([tldr.bn_loss(clf, x) for _ in range(20)]).mean()
        without = ref_bn(clf, x, dropout=False)
    assert with_dropout < without / 3, (with_dropout, without)


def test_bn_by_hand():
    # A 4x4 one-channel classifier, width 1 (batch norms of 1 and 2 channels). Images equal
    # to the normalisation mean are 0 after it, so each conv outputs its bias everywhere.
    clf = tldr.Classifier(channels=1, image_size=4, width=1, hidden=2, mean=[0.3], std=[0.2]).double().eval()
    conv1, bn1, conv2, bn2 = clf.conv[0], clf.conv[1], clf.conv[5], clf.conv[6]
    with torch.no_grad():
        conv1.bias.fill_(2.0)                                  # layer 1 input: all 2 -> mean 2, var 0
        bn1.running_mean.fill_(0.5), bn1.running_var.fill_(3.0)
        bn1.weight.fill_(0.0), bn1.bias.fill_(1.0)             # its output: all 1
        conv2.weight.zero_(), conv2.bias.copy_(torch.tensor([1.0, -1.0]))  # layer 2: means (1, -1), var 0
        bn2.running_mean.zero_(), bn2.running_var.fill_(1.0)
    images = clf.mean.expand(3, 1, 4, 4)  # 0.3 as stored (float32 0.3 is not float64 0.3)
    # |2 - 0.5| + |0 - 3| + ||(1, -1) - (0, 0)|| + ||(0, 0) - (1, 1)|| = 1.5 + 3 + sqrt(2) + sqrt(2)
    assert_close(tldr.bn_loss(clf, images), torch.tensor(4.5 + 2 * math.sqrt(2), dtype=torch.float64))


def test_weighted_sum_matches_reference():
    names = list(tldr.TERMS)
    weights = {tldr.TERMS[k]: float(w) for k, w in zip(names, torch.rand(len(names)) * 10)}

    def as_dict(*values):
        return dict(zip(names, values))
    check_against_reference(lambda *v: tldr.weighted_sum(as_dict(*v), weights),
                            lambda *v: ref_weighted_sum(as_dict(*v), weights),
                            *torch.randn(len(names), dtype=torch.float64))


def test_weighted_sum_by_hand_inversion_only():
    # L_Inv = 1*0.5 + 2*0.25 + 3*(-0.5) + 4*1 = 0.5 + 0.5 - 1.5 + 4 = 3.5 (only four terms, four weights)
    terms = {"kl": torch.tensor(0.5), "ce": torch.tensor(0.25), "cos": torch.tensor(-0.5), "ortho": torch.tensor(1.0)}
    weights = {"alpha": 1.0, "beta": 2.0, "gamma": 3.0, "delta": 4.0}
    assert tldr.weighted_sum(terms, weights).item() == 3.5


# ---------------------------------------------------------------------------------
# Perturbation and conditioning
# ---------------------------------------------------------------------------------

def test_perturb_is_within_epsilon_linf():
    images = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    for eps in (0.05, 0.3, 1.2):
        diff = tldr.perturb(images, eps) - images
        assert diff.shape == images.shape and diff.dtype == images.dtype
        assert diff.abs().max() <= eps
        assert diff.abs().max() > eps / 2  # not all zero, and uses the budget
    assert torch.equal(tldr.perturb(images, 0.0), images)


def test_soft_conditioning():
    labels = torch.cat([torch.arange(N), torch.randint(N, (30,))])
    p, _ = tldr.sample_conditioning(labels, hot=False)
    assert p.shape == (len(labels), N)
    assert_close(p.sum(1), torch.ones(len(labels)), rtol=0, atol=1e-6)
    assert torch.equal(p.argmax(1), labels)
    assert (p > 0).all() and (p.max(1).values < 0.999).all()  # a soft vector, not one-hot


def test_soft_conditioning_is_a_swapped_gaussian():
    # Same random stream: P is softmax(v) with v's largest entry swapped into the label's
    # place, so each row holds the same multiset of values as softmax(v).
    labels = torch.randint(N, (20,))
    torch.manual_seed(1)
    v = torch.randn(len(labels), N)
    torch.manual_seed(1)
    p, _ = tldr.sample_conditioning(labels, hot=False)
    assert_close(p.sort(1).values, v.softmax(1).sort(1).values, rtol=1e-6, atol=1e-7)
    # only the label's entry and the old argmax moved
    moved = ((p - v.softmax(1)).abs() > 1e-7).sum(1)
    assert (moved <= 2).all() and (moved > 0).any()


def test_hot_conditioning_and_matrix():
    labels = torch.cat([torch.arange(N), torch.randint(N, (6,))])
    p, matrix = tldr.sample_conditioning(labels, hot=True)
    assert torch.equal(p, F.one_hot(labels, N).float())
    assert matrix.shape == (len(labels), 1, N, N)
    for b, y in enumerate(labels.tolist()):
        for i in range(N):
            for j in range(N):
                assert matrix[b, 0, i, j] == (1.0 if i == y or j == y else 0.0)
    # soft mode gives the same (always hot) matrix
    assert torch.equal(tldr.sample_conditioning(labels, hot=False)[1], matrix)


# ---------------------------------------------------------------------------------
# 3.1 Classifier and 3.2 Generator
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks,convs", [(2, 1), (3, 1), (3, 2), (3, 3)])
@pytest.mark.parametrize("channels,size", SIZES)
def test_classifier_shapes(channels, size, blocks, convs):
    clf = tldr.Classifier(channels=channels, image_size=size, hidden=48, blocks=blocks, convs=convs).eval()
    logits, features = clf(torch.rand(3, channels, size, size))
    assert logits.shape == (3, N) and features.shape == (3, 48)
    assert_close(clf.head(features), logits, rtol=1e-6, atol=1e-6)  # features are the penultimate layer
    # block k: `convs` convs of 32 * 2^k channels; side halved once a block (28 -> 14 -> 7 -> 3, 32 -> 16 -> 8 -> 4)
    bns = [m for m in clf.conv if isinstance(m, nn.BatchNorm2d)]
    assert [bn.num_features for bn in bns] == [32 * 2 ** k for k in range(blocks) for _ in range(convs)]
    if (blocks, convs) == (3, 2):  # C -> 32, 32 -> 32 | 32 -> 64, 64 -> 64 | 64 -> 128, 128 -> 128
        assert [m.in_channels for m in clf.conv if isinstance(m, nn.Conv2d)] == [channels, 32, 32, 64, 64, 128]
    side = size // 2 ** blocks
    assert clf.conv(torch.rand(3, channels, size, size)).shape == (3, 32 * 2 ** (blocks - 1), side, side)


def test_two_blocks_keep_the_layer_names_of_checkpoints_saved_before_blocks_existed():
    names = ["conv.0", "conv.1", "conv.5", "conv.6", "head", "hidden.1", "mean", "std"]  # conv, BN, conv, BN, ...
    clf = tldr.Classifier(channels=1, image_size=28)
    assert sorted({k.rsplit(".", 1)[0] for k in clf.state_dict()}) == names
    assert (clf.config["blocks"], clf.config["convs"]) == (2, 1)


@pytest.mark.parametrize("channels,size", SIZES)
@pytest.mark.parametrize("conditioning", tldr.CONDITIONINGS)
def test_generator_shapes(conditioning, channels, size):
    gen = tldr.Generator(conditioning=conditioning, channels=channels, image_size=size, width=16)
    labels = torch.tensor([0, 4, 9])
    p, matrix = tldr.sample_conditioning(labels, hot=False)
    out = gen(torch.randn(3, gen.config["latent_dim"]), labels, p, matrix)
    assert out.shape == (3, channels, size, size)


def test_generator_output_squashing():
    z, labels = torch.randn(8, 64), torch.arange(8)
    p, matrix = tldr.sample_conditioning(labels, hot=True)
    outs = {}
    for output in tldr.OUTPUTS:
        torch.manual_seed(0)  # the same weights for both
        gen = tldr.Generator(conditioning="vector-matrix", channels=1, image_size=28, width=16, output=output)
        with torch.no_grad():
            gen.to_image[-1].bias.fill_(3.0)  # push the linear output above 1
            outs[output] = gen.eval()(z, labels, p, matrix)
    assert outs["linear"].max() > 1  # the paper's generator: L_Pix has work to do
    assert (outs["sigmoid"] > 0).all() and (outs["sigmoid"] < 1).all()
    assert_close(outs["sigmoid"], torch.sigmoid(outs["linear"]), rtol=1e-6, atol=1e-6)
    with pytest.raises(tldr.TLDRError, match="output"):
        tldr.Generator(conditioning="label", channels=1, image_size=28, output="tanh")


def generator_outputs(conditioning, variants):
    """Outputs of one eval-mode generator for the same z and several (labels, p, matrix)."""
    gen = tldr.Generator(conditioning=conditioning, channels=1, image_size=28, width=16).eval()
    z = torch.randn(4, gen.config["latent_dim"])
    with torch.no_grad():
        return [gen(z, *v) for v in variants]


def conditioning_pair():
    """Two different (labels, P, matrix) triples, and mixes of them."""
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    (pa, ma), (pb, mb) = tldr.sample_conditioning(a, hot=False), tldr.sample_conditioning(b, hot=False)
    return a, b, pa, pb, ma, mb


def test_vector_conditioning_ignores_labels_uses_p():
    a, b, pa, pb, ma, mb = conditioning_pair()
    base, other_labels, other_p = generator_outputs("vector", [(a, pa, ma), (b, pa, mb), (a, pb, ma)])
    assert torch.equal(base, other_labels)  # the label (and matrix) never reach it
    assert not torch.allclose(base, other_p)


def test_matrix_conditioning_uses_matrix_only():
    a, b, pa, pb, ma, mb = conditioning_pair()
    base, other_lp, other_m = generator_outputs("matrix", [(a, pa, ma), (b, pb, ma), (a, pa, mb)])
    assert torch.equal(base, other_lp)
    assert not torch.allclose(base, other_m)


def test_label_conditioning_uses_labels_only():
    a, b, pa, pb, ma, mb = conditioning_pair()
    base, other_pm, other_l = generator_outputs("label", [(a, pa, ma), (a, pb, mb), (b, pa, ma)])
    assert torch.equal(base, other_pm)
    assert not torch.allclose(base, other_l)


def test_vector_matrix_conditioning_uses_p_and_matrix():
    a, b, pa, pb, ma, mb = conditioning_pair()
    base, other_l, other_p, other_m = generator_outputs(
        "vector-matrix", [(a, pa, ma), (b, pa, ma), (a, pb, ma), (a, pa, mb)])
    assert torch.equal(base, other_l)
    assert not torch.allclose(base, other_p)
    assert not torch.allclose(base, other_m)


# ---------------------------------------------------------------------------------
# L_Grad: per-image norm of the weight gradient, three implementations
# ---------------------------------------------------------------------------------

def float64_classifier(channels, size, blocks=2, convs=1):
    """A small float64 classifier in eval mode with non-trivial batch-norm state."""
    clf = tldr.Classifier(channels=channels, image_size=size, width=8, hidden=32, blocks=blocks, convs=convs).double()
    with torch.no_grad():
        for m in clf.modules():
            if isinstance(m, nn.BatchNorm2d):  # gamma, beta away from their 1, 0 init
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        clf.train()
        for _ in range(3):  # running mean / var away from 0 / 1
            clf(torch.rand(16, channels, size, size, dtype=torch.float64) * 1.5)
    return clf.eval()


def norms_and_image_grads(fn, clf, images, labels, weights):
    x = images.detach().clone().requires_grad_(True)
    norms = fn(clf, x, labels)
    g, = torch.autograd.grad((norms * weights).sum(), x)  # random weights: every row matters
    return norms.detach(), g


@pytest.mark.parametrize("channels,size,blocks,convs", [(1, 28, 2, 1), (3, 32, 2, 1), (1, 28, 3, 2), (1, 28, 3, 3)])
def test_grad_norms_three_ways(channels, size, blocks, convs):
    clf = float64_classifier(channels, size, blocks, convs)
    assert clf.conv[1].running_mean.abs().max() > 0.01
    images = torch.rand(4, channels, size, size, dtype=torch.float64)
    labels = torch.randint(N, (4,))
    weights = torch.rand(4, dtype=torch.float64)
    norms, g = norms_and_image_grads(tldr.grad_norms, clf, images, labels, weights)
    assert (norms > 0).all() and g.abs().sum() > 0
    for other in (tldr.grad_norms_loop, tldr.grad_norms_fast):
        other_norms, other_g = norms_and_image_grads(other, clf, images, labels, weights)
        assert_close(other_norms, norms, rtol=1e-9, atol=1e-12)
        assert_close(other_g, g, rtol=1e-9, atol=1e-12)


def test_grad_norms_chunked_equals_unchunked():
    clf = float64_classifier(1, 28)
    images, labels = torch.rand(5, 1, 28, 28, dtype=torch.float64), torch.randint(N, (5,))
    assert_close(tldr.grad_norms(clf, images, labels, chunk_size=2), tldr.grad_norms(clf, images, labels))


def test_grad_norm_by_hand():
    # ||grad_theta L||: the full gradient over every weight (not the running stats),
    # flattened into one vector, with the cross-entropy written out.
    clf = float64_classifier(3, 32)
    images, labels = torch.rand(2, 3, 32, 32, dtype=torch.float64), torch.tensor([3, 7])
    norms = tldr.grad_norms(clf, images, labels)
    params = list(clf.parameters())
    for x, y, norm in zip(images, labels, norms):
        logits = clf(x[None])[0][0]
        loss = torch.logsumexp(logits, 0) - logits[y]  # -log softmax(logits)[y]
        flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        assert len(flat) == sum(p.numel() for p in params)
        assert_close(norm, torch.sqrt(torch.dot(flat, flat)))


def test_grad_norm_image_gradient_by_finite_differences():
    # d norm / d image along a random direction v, against (f(x + hv) - f(x - hv)) / 2h
    clf = float64_classifier(1, 28)
    x, y = torch.rand(1, 1, 28, 28, dtype=torch.float64), torch.tensor([5])
    v = torch.randn_like(x)
    _, g = norms_and_image_grads(tldr.grad_norms, clf, x, y, torch.ones(1, dtype=torch.float64))
    h = 1e-6
    with torch.no_grad():
        fd = (tldr.grad_norms(clf, x + h * v, y) - tldr.grad_norms(clf, x - h * v, y)) / (2 * h)
    assert_close((g * v).sum(), fd[0], rtol=1e-5, atol=1e-8)


def test_grad_norms_fast_rejects_unknown_layers():
    clf = float64_classifier(1, 28)
    clf.extra = nn.LayerNorm(4).double()  # a parameter the fast path cannot account for
    with pytest.raises(tldr.TLDRError):
        tldr.grad_norms_fast(clf, torch.rand(2, 1, 28, 28, dtype=torch.float64), torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------
# L_Recon: the nine terms and their weights
# ---------------------------------------------------------------------------------

@pytest.fixture
def recon_setup():
    clf = float64_classifier(1, 28)
    labels = torch.tensor([1, 2, 3, 4])
    p, _ = tldr.sample_conditioning(labels, hot=True)
    images = (torch.rand(4, 1, 28, 28, dtype=torch.float64) * 1.4 - 0.2).requires_grad_(True)
    return clf, images, labels, p.double()


def test_reconstruction_terms_are_the_losses(recon_setup):
    clf, images, labels, p = recon_setup
    torch.manual_seed(0)
    terms = tldr.reconstruction_losses(clf, images, labels, p, epsilon=0.0)  # no perturbation
    assert set(terms) == set(tldr.TERMS)
    assert all(v.dim() == 0 for v in terms.values())
    with torch.no_grad():
        logits, features = clf(images)
        torch.manual_seed(0)
        torch.rand_like(images)  # the perturbation's draw, so L_BN's dropout masks come next
        expected = {"kl": ref_kl(p, logits), "ce": ref_ce(logits, labels), "cos": ref_cosine(features),
                    "ortho": ref_ortho(features), "kl_pert": ref_kl(p, logits), "ce_pert": ref_ce(logits, labels),
                    "var": ref_var(images), "pix": ref_pix_paper(images) / len(images), "bn": ref_bn(clf, images)}
    expected["grad"] = tldr.grad_norms_loop(clf, images, labels).mean()  # mean of the per-image norms
    for k in tldr.TERMS:
        assert_close(terms[k], expected[k], rtol=1e-9, atol=1e-12)
    fast = tldr.reconstruction_losses(clf, images, labels, p, epsilon=0.0, grad_method="fast")
    assert_close(fast["grad"], terms["grad"], rtol=1e-9, atol=1e-12)
    # with epsilon > 0 the perturbed terms differ from the clean ones
    noisy = tldr.reconstruction_losses(clf, images, labels, p, epsilon=0.5)
    assert noisy["ce_pert"] != noisy["ce"]
    with pytest.raises(tldr.TLDRError, match="grad_method"):
        tldr.reconstruction_losses(clf, images, labels, p, epsilon=0.0, grad_method="loop")


def test_weighted_sum_picks_one_term(recon_setup):
    clf, images, labels, p = recon_setup
    terms = tldr.reconstruction_losses(clf, images, labels, p, epsilon=0.1)
    for name, weight_name in tldr.TERMS.items():
        weights = {w: 0.0 for w in tldr.TERMS.values()} | {weight_name: 2.5}
        assert_close(tldr.weighted_sum(terms, weights), 2.5 * terms[name])


def test_grad_norm_of_a_saturated_classifier_has_finite_image_gradients():
    # Images far outside [0, 1] saturate the softmax: the loss and every weight gradient
    # are exactly 0, and d sqrt(s)/ds at s = 0 is infinite. The 1e-12 under the square
    # root keeps the generator's gradient finite (it was NaN without it).
    torch.manual_seed(0)
    clf = tldr.Classifier(channels=1, image_size=28).eval().requires_grad_(False)
    x = (1e4 * torch.randn(3, 1, 28, 28)).requires_grad_(True)
    y = clf(x)[0].argmax(1)
    assert (F.cross_entropy(clf(x)[0], y, reduction="none") == 0).all()
    for norms in (tldr.grad_norms, tldr.grad_norms_fast):
        (g,) = torch.autograd.grad(norms(clf, x, y).sum(), x)
        assert torch.isfinite(g).all()


def test_sample_keeps_the_images_the_classifier_is_most_confident_on():
    gen = tldr.Generator(conditioning="vector-matrix", channels=1, image_size=28, width=16)
    clf = tldr.Classifier(channels=1, image_size=28, width=8, hidden=16).eval()
    torch.manual_seed(1)
    every_x, every_y = tldr.sample(gen, 6, True, "cpu")          # draws=1: all 6 per class
    torch.manual_seed(1)
    x, y = tldr.sample(gen, 2, True, "cpu", clf, draws=3)        # the same 6 drawn, 2 kept
    assert x.shape == (2 * N, 1, 28, 28) and torch.equal(y, torch.arange(N).repeat_interleave(2))
    with torch.no_grad():
        conf = F.softmax(clf(every_x)[0].double(), 1)[torch.arange(len(every_y)), every_y]  # P(y|x)
    for c in range(N):
        rows = (every_y == c).nonzero()[:, 0]
        expected = rows[conf[rows].argsort(descending=True)[:2]].sort().values  # the 2 surest, in draw order
        assert torch.equal(x[y == c], every_x[expected])


@pytest.mark.parametrize("shift,flip", [(0, list(range(N))), (2, [1, 4, 5, 8]), (1, [])])
def test_shift_and_flip_show_the_classifier_the_batch_moved_and_mirrored(shift, flip):
    """train_generator(shift=, flip=): a step's terms are those of its batch rolled by the
    step's (dy, dx), then, when the step's coin comes up, with the images of the `flip`
    classes mirrored left-right, image by image; with neither, of the batch itself."""
    clf = tldr.Classifier(channels=1, image_size=28, width=4, hidden=8).eval()
    gen = tldr.Generator(conditioning="vector-matrix", channels=1, image_size=28, latent_dim=4, width=4)
    start = copy.deepcopy(gen.state_dict())
    weights = {w: 1.0 for w in tldr.TERMS.values()}
    moved, coins = set(), set()
    for seed in range(6):
        gen.load_state_dict(start)
        gen.train()
        torch.manual_seed(seed)  # the batch, the shift and the coin, drawn in train_generator's order
        images, labels, p = tldr.generate(gen, torch.randint(N, (8,)), False, 4, "cpu")
        x = images.detach().clone()
        if shift:
            dy, dx = torch.randint(-shift, shift + 1, (2,)).tolist()
            x = torch.cat([x[:, :, -dy:], x[:, :, :-dy]], 2) if dy else x  # rows down by dy, wrapping
            x = torch.cat([x[..., -dx:], x[..., :-dx]], 3) if dx else x  # columns right by dx
            moved.add((dy, dx) != (0, 0))
        mirrored = bool(flip) and bool(torch.rand(()) < 0.5)
        for i in range(len(x)):
            if mirrored and labels[i] in flip:
                x[i] = x[i, :, :, torch.arange(27, -1, -1)]  # column j <- column 27 - j
        with torch.no_grad():
            expected = tldr.inversion_losses(clf, x, labels, p)
            plain = tldr.inversion_losses(clf, images, labels, p)
        if mirrored or shift and (dy, dx) != (0, 0):
            assert max(abs(expected[k] / plain[k] - 1) for k in plain) > 1e-4  # the move or the mirror shows
        gen.load_state_dict(start)
        torch.manual_seed(seed)
        state = tldr.train_generator(gen, clf, reconstruct=False, steps=1, batch_size=8, lr=1e-3,
                                     weights=weights, epsilon=0.1, device="cpu", shift=shift, flip=flip,
                                     log=lambda line: None)
        assert state["terms"] == pytest.approx({k: v.item() for k, v in expected.items()}, rel=1e-5)
        coins.add(mirrored)
    assert (True in moved) == bool(shift) and coins == ({True, False} if flip else {False})  # all was checked
