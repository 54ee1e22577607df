"""Training-Like Data Reconstruction (TLDR), in one file.

"Training-Like Data Reconstruction" trains a conditioned generator against a frozen
classifier until the classifier assigns its images to the asked-for class (network
inversion), then pushes those images toward the classifier's own training data by
asking for what training data has: high confidence, robustness to perturbation and
small weight gradients (reconstruction). Shared weights leak training data.

The file follows the paper's section 3, top to bottom:

  0.   Data             torchvision datasets as [0, 1] tensors, a seeded training subset
  3.1  Classifier       conv + batch norm + leaky ReLU + dropout + fully connected
  3.2  Generator        transposed convs; label / vector / matrix / vector-matrix conditioning
  3.3  Inversion        L_Inv = alpha*L_KL + beta*L_CE + gamma*L_Cosine + delta*L_Ortho
  3.4  Reconstruction   L_Recon = L_Inv + alpha'*L_KL^pert + beta'*L_CE^pert
                                  + eta1*L_Var + eta2*L_Pix + eta3*L_Grad
                                  (+ eta_bn*L_BN: a deviation, batch-norm statistics)
                        L_Grad = ||grad_theta L(f_theta(I), y)|| per image (torch.func),
                        plus an exact faster path checked against it
  4.   Training loops   the classifier; a generator (inversion or reconstruction)
  5.   Evaluation       SSIM nearest neighbours in the training subset vs a held-out set;
                        the three premises: confidence, input and weight gradient norms
  6.   Plumbing         devices, seeds, checkpoints, errors shared by the three scripts

Shapes: B = batch, C = channels, H = W = image side, N = number of classes (10).
Every place this code departs from the paper, or decides what the paper leaves open,
says so in a comment starting with "Choice:" or "Deviation:"; README.md lists them all.
"""
import argparse
import json
import os
import random
import signal
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap


class TLDRError(Exception):
    """A problem the user can fix; the scripts print it as one line and exit 1."""


# ---------------------------------------------------------------------------------
# 0. Data
# ---------------------------------------------------------------------------------
# name -> (torchvision class name, channels, image side, size of the train split)
DATASETS = {"mnist": ("MNIST", 1, 28, 60000), "fmnist": ("FashionMNIST", 1, 28, 60000),
            "svhn": ("SVHN", 3, 32, 73257), "cifar10": ("CIFAR10", 3, 32, 50000)}
NUM_CLASSES = 10


def load_split(name, root, train):
    """The whole split as (images [n, C, H, W] float in [0, 1], labels [n] long)."""
    import torchvision  # imported here so `python invert.py --help` stays fast
    cls = getattr(torchvision.datasets, DATASETS[name][0])
    # SVHN names its splits; the others take train=True/False.
    kw = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
    try:
        try:
            ds = cls(root, download=False, **kw)
        except RuntimeError:  # files missing (or failing their checksum): fetch them
            ds = cls(root, download=True, **kw)
    except Exception as e:
        raise TLDRError(
            f"could not load {name} from '{root}' and could not download it ({type(e).__name__}); "
            f"put the official files under '{os.path.join(root, cls.__name__, 'raw') if name in ('mnist', 'fmnist') else root}' "
            f"or pass --data-root to a folder that has them")
    data = torch.as_tensor(ds.data)
    labels = torch.as_tensor(ds.labels if name == "svhn" else ds.targets).long()
    if data.dim() == 3:  # MNIST-like: [n, H, W] -> [n, 1, H, W]
        data = data.unsqueeze(1)
    elif name == "cifar10":  # CIFAR-10 stores [n, H, W, C] -> [n, C, H, W]; SVHN is already NCHW
        data = data.permute(0, 3, 1, 2)
    return data.float().div(255), labels


def draw_subset(n_train, subset, seed):
    """The training subset: `subset` indices into the train split, drawn from `seed`.

    Choice: a uniformly random subset (not class-balanced), sorted, from its own
    torch.Generator so it depends on the seed alone.
    """
    if subset is None:
        return torch.arange(n_train)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:subset].sort().values


# ---------------------------------------------------------------------------------
# 3.1 Classifier
# ---------------------------------------------------------------------------------
# The paper names the parts (convolutions, batch norm, leaky ReLU, dropout, fully
# connected layers, softmax, weight decay) but not the sizes. Choice: two conv blocks
# of one conv each and one hidden linear layer, about 420k weights at 28x28 and 550k
# at 32x32. `blocks` and `convs` (per block) make it deeper, with more batch norms for
# L_BN to match: against three blocks of two convs (six) FashionMNIST's coats and sandals
# take shape and its shirts lose theirs; against three of three (nine) two generators
# of three give coats, shirts and pullovers too (README, tuning notes).

class Classifier(nn.Module):
    def __init__(self, *, channels, image_size, width=32, hidden=128, dropout=0.25, blocks=2, convs=1,
                 mean=None, std=None):
        super().__init__()
        mean, std = mean or [0.5] * channels, std or [0.25] * channels
        self.config = dict(channels=channels, image_size=image_size, width=width,
                           hidden=hidden, dropout=dropout, blocks=blocks, convs=convs, mean=mean, std=std)
        # Normalisation lives inside the model (per-channel mean and std of the training
        # subset), so it takes [0, 1] images like the ones the generator makes.
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

        def block(c_in, c_out):  # (conv -> BN -> leaky ReLU) x convs -> 2x2 max pool -> dropout
            layers = []
            for i in range(convs):
                layers += [nn.Conv2d(c_out if i else c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                           nn.LeakyReLU(0.2)]
            return layers + [nn.MaxPool2d(2), nn.Dropout(dropout)]
        # block k has width * 2^k channels and halves the side: 28 -> 14 -> 7 (-> 3)
        sizes = [channels] + [width * 2 ** k for k in range(blocks)]  # [C, w, 2w, ...]
        self.conv = nn.Sequential(*[layer for k in range(blocks) for layer in block(sizes[k], sizes[k + 1])])
        side = image_size // 2 ** blocks
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(sizes[-1] * side * side, hidden),
                                    nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x):
        """x: [B, C, H, W] in [0, 1] -> (logits [B, N], penultimate features [B, hidden])."""
        h = self.conv((x - self.mean) / self.std)  # [B, width * 2^(blocks-1), H/2^blocks, W/2^blocks]
        features = self.hidden(h)                  # [B, hidden]: feeds L_Cosine and L_Ortho
        return self.head(features), features       # softmax(logits) = the paper's output Q


# ---------------------------------------------------------------------------------
# 3.2 Generator and its four conditionings
# ---------------------------------------------------------------------------------
CONDITIONINGS = ("label", "vector", "matrix", "vector-matrix")
OUTPUTS = ("sigmoid", "linear")


def sample_conditioning(labels, hot):
    """The generator's conditioning for the given labels [B].

    Returns (P [B, N], matrix [B, 1, N, N]):
      P       the conditioning distribution. Soft (3.2.2): softmax of a Gaussian vector
              whose argmax is the label; hot (3.4): the one-hot label.
      matrix  the hot conditioning matrix (3.2.3): row and column `label` set to 1.
    Each generator uses the parts its conditioning needs.
    """
    if hot:
        p = F.one_hot(labels, NUM_CLASSES).float()
    else:
        # Draw v ~ N(0, I), then swap the largest entry into the label's place, so that
        # argmax(softmax(v)) = label. Naive equivalent: draw v until argmax(v) == label.
        v = torch.randn(len(labels), NUM_CLASSES)
        top = v.argmax(1, keepdim=True)
        v_top, v_lab = v.gather(1, top), v.gather(1, labels[:, None])
        v = v.scatter(1, top, v_lab).scatter(1, labels[:, None], v_top)
        p = v.softmax(1)
    hot_rows = F.one_hot(labels, NUM_CLASSES).float()                      # [B, N]
    # M[i, j] = 1 if i == label or j == label, else 0
    matrix = (hot_rows[:, :, None] + hot_rows[:, None, :]).clamp(max=1)   # [B, N, N]
    return p, matrix[:, None]


class Generator(nn.Module):
    """Latent z (+ conditioning) -> image, by transposed convolutions (and a sigmoid).

    label:         z ++ learnt embedding(label)   from the start
    vector:        z ++ P (soft or hot vector)    from the start; the label is never given
    matrix:        z alone up to N x N, then the hot matrix as an extra channel
    vector-matrix: z ++ P up to N x N, then the matrix (same label) as an extra channel
    """

    def __init__(self, *, conditioning, channels, image_size, latent_dim=64, width=64, dropout=0.2,
                 output="sigmoid"):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise TLDRError(f"unknown conditioning '{conditioning}', expected one of {', '.join(CONDITIONINGS)}")
        if output not in OUTPUTS:
            raise TLDRError(f"unknown generator output '{output}', expected one of {', '.join(OUTPUTS)}")
        self.config = dict(conditioning=conditioning, channels=channels, image_size=image_size,
                           latent_dim=latent_dim, width=width, dropout=dropout, output=output)
        self.conditioning = conditioning
        n = NUM_CLASSES
        self.embed = nn.Embedding(n, n) if conditioning == "label" else None
        vec_dim = 0 if conditioning == "matrix" else n
        mat_dim = 1 if conditioning in ("matrix", "vector-matrix") else 0
        # Choice: BN + leaky ReLU after every up-convolution but the last, dropout (which the paper
        # credits for diversity) only in the layers before the matrix: dropout right
        # before the output layer shows up as per-pixel speckle.
        # Deviation: a sigmoid at the end (output="sigmoid", the default) keeps every
        # pixel in [0, 1], so L_Pix is always 0. The paper's generator has no squashing and
        # relies on L_Pix (output="linear"); its images then leave [0, 1] where the
        # classifier still reads them, and come out noise-like (README, tuning table).
        def up(c_in, c_out, k, s, p):
            return [nn.ConvTranspose2d(c_in, c_out, k, s, p), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.to_matrix_size = nn.Sequential(
            nn.Unflatten(1, (latent_dim + vec_dim, 1, 1)),
            *up(latent_dim + vec_dim, 4 * width, n // 2, 1, 0), nn.Dropout(dropout),  # [B, 4w, N/2, N/2] = 5x5
            *up(4 * width, 2 * width, 4, 2, 1), nn.Dropout(dropout))                  # [B, 2w, N, N]     = 10x10
        half = image_size // 2
        self.to_image = nn.Sequential(
            *up(2 * width + mat_dim, width, half - n + 1, 1, 0),  # [B, w, H/2, W/2]: 14 or 16
            nn.ConvTranspose2d(width, channels, 4, 2, 1))          # [B, C, H, W]:     28 or 32
        self.squash = nn.Sigmoid() if output == "sigmoid" else nn.Identity()

    def forward(self, z, labels, p, matrix):
        """z [B, latent], labels [B], P [B, N], matrix [B, 1, N, N] -> images [B, C, H, W]."""
        if self.conditioning == "label":
            z = torch.cat([z, self.embed(labels)], 1)
        elif self.conditioning in ("vector", "vector-matrix"):
            z = torch.cat([z, p], 1)
        h = self.to_matrix_size(z)  # [B, 2w, N, N]; for "matrix" still unconditioned here
        if self.conditioning in ("matrix", "vector-matrix"):
            h = torch.cat([h, matrix], 1)  # [B, 2w + 1, N, N]
        return self.squash(self.to_image(h))


# ---------------------------------------------------------------------------------
# 3.3 Network inversion losses
# ---------------------------------------------------------------------------------

def kl_loss(p, logits):
    # L_KL = D_KL(P || Q) = sum_i P(i) * log(P(i) / Q(i)),  Q = softmax(logits); mean over the batch.
    # xlogy(P, P) = P log P with 0 log 0 = 0, so one-hot P works (then L_KL = L_CE).
    # Note F.kl_div(log Q, P) computes the same; the argument order is easy to get backwards.
    return (torch.xlogy(p, p) - p * logits.log_softmax(1)).sum(1).mean()


def ce_loss(logits, labels):
    # L_CE = -sum_i y_i * log(yhat_i),  y = one-hot(label), yhat = softmax(logits); mean over the batch.
    return F.cross_entropy(logits, labels)


def cosine_loss(features):
    # L_Cosine = 1/(N(N-1)) * sum_{i != j} cos(theta_ij),  over the B feature vectors of the batch
    f = F.normalize(features, dim=1)                        # [B, D], unit rows
    cos = f @ f.T                                           # [B, B], cos(theta_ij)
    b = len(f)
    return (cos.sum() - cos.diagonal().sum()) / (b * (b - 1))


def ortho_loss(features):
    # L_Ortho = 1/N^2 * sum_{i,j} (G_ij - delta_ij)^2,  G = F F^T
    # Choice: F is L2-normalised so that G_ii = 1 can be met; the paper leaves it open.
    f = F.normalize(features, dim=1)                        # [B, D]
    gram = f @ f.T                                          # [B, B]
    return ((gram - torch.eye(len(f), device=f.device)) ** 2).mean()


def inversion_losses(classifier, images, labels, p):
    """The four terms of L_Inv, unweighted, as a dict of scalars."""
    logits, features = classifier(images)
    return {"kl": kl_loss(p, logits), "ce": ce_loss(logits, labels),
            "cos": cosine_loss(features), "ortho": ortho_loss(features)}


# ---------------------------------------------------------------------------------
# 3.4 Training-like data reconstruction losses
# ---------------------------------------------------------------------------------

def perturb(images, epsilon):
    # I_pert = I + u,  u ~ Uniform[-epsilon, epsilon] per pixel, so ||I_pert - I||_inf <= epsilon.
    # Choice: random noise, not a worst-case (FGSM) step; the paper only says "L-infinity".
    return images + epsilon * (2 * torch.rand_like(images) - 1)


def var_loss(images):
    # L_Var = 1/N * sum_i sum_{c,h,w} (I[i,c,h+1,w] - I[i,c,h,w])^2 + (I[i,c,h,w+1] - I[i,c,h,w])^2
    dh = images[:, :, 1:, :] - images[:, :, :-1, :]        # [B, C, H-1, W]
    dw = images[:, :, :, 1:] - images[:, :, :, :-1]        # [B, C, H, W-1]
    return ((dh ** 2).sum() + (dw ** 2).sum()) / len(images)


def pix_loss(images):
    # L_Pix = sum max(0, -I) + sum max(0, I - 1)
    # Deviation: the paper sums over the batch too; we divide by B so the weight eta2
    # does not depend on the batch size.
    return (F.relu(-images).sum() + F.relu(images - 1).sum()) / len(images)


def bn_loss(classifier, images):
    # L_BN = sum over the classifier's batch-norm layers l of
    #        || mean_b(h_l) - mu_l ||_2 + || var_b(h_l) - sigma_l^2 ||_2
    # h_l [B, C_l, H_l, W_l] = the input of layer l for the generated batch, read with the
    # classifier's dropout on (the Choice below); mean_b and var_b are per channel over
    # batch and positions; mu_l, sigma_l^2 = the layer's running statistics, i.e. the
    # statistics of the classifier's own training data.
    # Deviation: not in the paper. The batch-norm statistics are part of the shared
    # weights, so asking generated batches to match them (DeepInversion, Yin et al. 2020)
    # uses only what the paper's attacker has. Without it, and without the sigmoid output,
    # reconstructions stay noise-like at CPU-sized budgets (README, tuning table).
    # Choice: the classifier's dropout is active here (the batch norms still use their
    # running statistics), because the running statistics were gathered in training,
    # with dropout on, and dropout raises the variance of what the next layer sees. Read
    # with dropout off, the classifier's own training images score 1.6-2.3 times the L_BN
    # they score with it on, and L_BN pushed generated images past them (README, tuning notes).
    h = (images - classifier.mean) / classifier.std  # the normalisation inside forward()
    loss = images.new_zeros(())
    for layer in classifier.conv:
        if isinstance(layer, nn.BatchNorm2d):
            mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)  # [C_l] each
            loss = loss + (mean - layer.running_mean).norm() + (var - layer.running_var).norm()
        # dropout as in training: zero each value with probability p, scale the rest by 1/(1-p)
        h = F.dropout(h, layer.p, training=True) if isinstance(layer, nn.Dropout) else layer(h)
    return loss


# L_Grad = || grad_theta L(f_theta(I), y) ||, one norm per generated image I, over all
# of the classifier's weights theta (not its batch-norm running statistics), with
# L = cross-entropy and the classifier in eval mode. Three ways to compute it follow:
# a plain loop (the definition), torch.func (the reference used by default) and an
# exact faster path. Tests check all three agree, values and image gradients.
# Choice: the norm is sqrt(||g||^2 + 1e-12), not sqrt(||g||^2): when the softmax
# saturates (an image far outside [0, 1] early in training) g is exactly 0, and the
# derivative of sqrt at 0 is infinite, which turns the generator's weights into NaN.
TINY = 1e-12

def grad_norms_loop(classifier, images, labels):
    """Naive: one autograd.grad call per image. [B] norms, differentiable w.r.t. images."""
    params = [p for p in classifier.parameters()]
    norms = []
    for x, y in zip(images, labels):
        loss = F.cross_entropy(classifier(x[None])[0], y[None])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        norms.append(torch.sqrt(sum((g ** 2).sum() for g in grads) + TINY))
    return torch.stack(norms)


def grad_norms(classifier, images, labels, chunk_size=None):
    """torch.func: vmap over the batch of grad of one image's loss. [B] norms.

    The result stays differentiable w.r.t. `images`, so the generator learns from it.
    `chunk_size` runs vmap on that many images at a time (less memory, same result).
    """
    params = {k: v.detach() for k, v in classifier.named_parameters()}
    buffers = {k: v.detach() for k, v in classifier.named_buffers()}

    def one_image_loss(params, x, y):  # x [C, H, W], y [] -> scalar loss
        logits = functional_call(classifier, (params, buffers), (x[None],))[0]
        return F.cross_entropy(logits, y[None])

    # in_dims: params shared (None); image and label batched along dim 0.
    per_image = vmap(grad(one_image_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)
    grads = per_image(params, images, labels)  # {name: [B, *param.shape]}
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())  # [B]: ||g_i||^2
    return (sq + TINY).sqrt()


def grad_norms_fast(classifier, images, labels):
    """Exact per-image weight-gradient norms from one forward and one backward pass.

    In eval mode the images do not interact, so d(sum_i L_i)/d(output of a layer) has,
    in row i, the gradient of image i's own loss: delta_i. Each layer's per-image weight
    gradient then follows from its input a_i and delta_i alone:
      Linear   W: ||delta_i a_i^T||^2 = ||a_i||^2 ||delta_i||^2 (never built), b: ||delta_i||^2
      Conv2d   W: delta_i [C_out, P] @ unfold(a_i)^T [P, C_in*k*k], built per image; b: sum_p delta_i
      BatchNorm (eval) gamma: sum_p delta_i * xhat_i,  beta: sum_p delta_i
    Naive reference: grad_norms above (and grad_norms_loop).
    """
    layers = [m for m in classifier.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm2d))]
    if sum(p.numel() for m in layers for p in m.parameters()) != sum(p.numel() for p in classifier.parameters()):
        raise TLDRError("grad_norms_fast knows Linear, Conv2d and BatchNorm2d only; use grad_norms")
    seen = {}  # layer -> (input, output), recorded on the way forward
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(m, (i[0], o))) for m in layers]
    try:
        logits, _ = classifier(images)
    finally:
        for h in hooks:
            h.remove()
    loss_sum = F.cross_entropy(logits, labels, reduction="sum")  # sum_i L_i
    outputs = [seen[m][1] for m in layers]
    deltas = torch.autograd.grad(loss_sum, outputs, create_graph=True)  # delta_i of each layer
    sq = 0
    for m, delta in zip(layers, deltas):
        a = seen[m][0]
        if isinstance(m, nn.Linear):  # a [B, in], delta [B, out]
            d2 = delta.pow(2).sum(1)
            sq = sq + a.pow(2).sum(1) * d2 + d2
        elif isinstance(m, nn.Conv2d):  # a [B, C_in, H, W], delta [B, C_out, H', W']
            cols = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # [B, C_in*k*k, P]
            g_w = delta.flatten(2) @ cols.transpose(1, 2)                       # [B, C_out, C_in*k*k]
            sq = sq + g_w.pow(2).sum((1, 2)) + delta.sum((2, 3)).pow(2).sum(1)
        else:  # BatchNorm2d in eval: xhat = (a - running_mean) / sqrt(running_var + eps)
            xhat = (a - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps)
            sq = sq + (delta * xhat).sum((2, 3)).pow(2).sum(1) + delta.sum((2, 3)).pow(2).sum(1)
    return (sq + TINY).sqrt()


def reconstruction_losses(classifier, images, labels, p, epsilon, grad_method="func"):
    """The terms of L_Recon, unweighted: the four of L_Inv plus six more."""
    if grad_method not in ("func", "fast"):
        raise TLDRError(f"unknown grad_method '{grad_method}', expected 'func' or 'fast'")
    terms = inversion_losses(classifier, images, labels, p)
    logits_pert, _ = classifier(perturb(images, epsilon))
    terms["kl_pert"] = kl_loss(p, logits_pert)
    terms["ce_pert"] = ce_loss(logits_pert, labels)
    terms["var"] = var_loss(images)
    terms["pix"] = pix_loss(images)
    terms["bn"] = bn_loss(classifier, images)
    norms = grad_norms_fast(classifier, images, labels) if grad_method == "fast" else grad_norms(classifier, images, labels)
    terms["grad"] = norms.mean()  # Choice: the mean of the per-image norms over the batch
    return terms


# The weight of each term: alpha..delta for L_Inv; alpha', beta', eta1..3 and eta_bn added for L_Recon.
TERMS = {"kl": "alpha", "ce": "beta", "cos": "gamma", "ortho": "delta", "kl_pert": "alpha_pert",
         "ce_pert": "beta_pert", "var": "eta1", "pix": "eta2", "grad": "eta3", "bn": "eta_bn"}


def weighted_sum(terms, weights):
    # L_Inv = alpha*L_KL + beta*L_CE + gamma*L_Cosine + delta*L_Ortho
    # L_Recon = L_Inv + alpha'*L_KL^pert + beta'*L_CE^pert + eta1*L_Var + eta2*L_Pix + eta3*L_Grad
    #           + eta_bn*L_BN   (Deviation: L_BN is not in the paper; see bn_loss)
    return sum(weights[TERMS[name]] * value for name, value in terms.items())


# ---------------------------------------------------------------------------------
# 4. Training loops
# ---------------------------------------------------------------------------------

class Stop:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag the loops check between steps,
    so a run stops only at a step boundary, after saving."""
    requested = False

    def __enter__(self):
        Stop.requested = False
        self.old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        Stop.requested = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


class Interrupted(TLDRError):
    pass


def rng_state():
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def train_classifier(model, images, labels, *, epochs, batch_size, lr, weight_decay, device,
                     state=None, save=None, log=print):
    """Adam with weight decay on cross-entropy, `epochs` passes over (images, labels).

    `state` resumes from a saved training state; `save(state)` is called after every
    epoch and when stopped (Ctrl-C). Returns the final training state.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        epoch = state["epoch"]
    n = len(images)
    with Stop():
        while epoch < epochs:
            model.train()
            start, total = time.time(), 0.0
            for idx in torch.randperm(n).split(batch_size):
                x, y = images[idx].to(device), labels[idx].to(device)
                loss = F.cross_entropy(model(x)[0], y)
                check_finite({"ce": loss}, f"epoch {epoch + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            epoch += 1
            log(f"epoch {epoch}/{epochs} | ce {total / n:.4f} | {time.time() - start:.1f}s")
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "rng": rng_state()}
            if save:
                save(state)
            if Stop.requested and epoch < epochs:
                raise Interrupted(f"stopped after epoch {epoch}; continue with --resume")
    return state


@torch.no_grad()
def evaluate(model, images, labels, device, batch_size=1000):
    """Accuracy and mean confidence P(y|x) of `model` (eval mode) on (images, labels)."""
    model.eval()
    correct, conf = 0, 0.0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        probs = model(x.to(device))[0].softmax(1)
        y = y.to(device)
        correct += (probs.argmax(1) == y).sum().item()
        conf += probs.gather(1, y[:, None]).sum().item()
    return correct / len(labels), conf / len(labels)


def check_finite(terms, where):
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise TLDRError(f"loss term '{name}' became non-finite at {where}; "
                            "the last good checkpoint is kept; try a lower --lr")


def generate(generator, labels, hot, latent_dim, device):
    """Images [B, C, H, W] for `labels`, with fresh z ~ N(0, I) and conditioning."""
    p, matrix = sample_conditioning(labels, hot)
    z = torch.randn(len(labels), latent_dim)
    labels, p, matrix, z = labels.to(device), p.to(device), matrix.to(device), z.to(device)
    return generator(z, labels, p, matrix), labels, p


def train_generator(generator, classifier, *, reconstruct, steps, batch_size, lr, weights,
                    epsilon, device, grad_method="func", hot=None, flip=(), shift=0, state=None, save=None,
                    checkpoint_every=100, log_every=50, log=print):
    """Train `generator` against the frozen `classifier` (eval mode) for `steps` steps.

    Inversion: soft vectors, L_Inv. Reconstruction: hot vectors, L_Recon (`hot=False`
    gives reconstruction with soft vectors, an ablation). Labels are
    uniform over the classes. `shift`: at each step the classifier sees the batch moved by up
    to `shift` pixels each way, at random. `flip`: classes whose images it sees mirrored
    left-right, at a random half of the steps. `save(state)` is called every `checkpoint_every` steps,
    at the end, and when stopped. Returns the final state, with the last loss terms.
    """
    classifier.eval().requires_grad_(False)
    opt = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    step, last = 0, {}
    if state is not None:
        generator.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step, last = state["step"], state["terms"]
    latent_dim = generator.config["latent_dim"]
    hot = reconstruct if hot is None else hot
    flip = torch.tensor(list(flip), dtype=torch.long, device=device)  # [n] classes to mirror

    def snapshot():
        return {"model": generator.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "rng": rng_state(), "terms": last}

    start, start_step = time.time(), step
    with Stop():
        while step < steps:
            generator.train()
            labels = torch.randint(NUM_CLASSES, (batch_size,))
            images, labels, p = generate(generator, labels, hot, latent_dim, device)
            # Choices (not in the paper; augmentations of DeepInversion, Yin et al. 2020): the
            # images must convince the classifier moved by a few pixels, and mirrored for the
            # classes that look the same mirrored (clothes seen from the front; not shoes seen
            # from the side, not digits). Random numbers are drawn only for what is switched on.
            if shift:
                dy, dx = torch.randint(-shift, shift + 1, (2,)).tolist()
                images = images.roll((dy, dx), (2, 3))  # [B, C, H, W], rows and columns wrap round
            if len(flip) and torch.rand(()) < 0.5:
                mirror = torch.isin(labels, flip)  # [B] bool
                # naive: for i in range(B): if mirror[i]: images[i] = images[i].flip(2)
                images = torch.where(mirror[:, None, None, None], images.flip(3), images)  # W reversed where mirror
            if reconstruct:
                terms = reconstruction_losses(classifier, images, labels, p, epsilon, grad_method)
            else:
                terms = inversion_losses(classifier, images, labels, p)
            check_finite(terms | {"images": images.detach()}, f"step {step + 1}")
            loss = weighted_sum(terms, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            last = {k: v.item() for k, v in terms.items()}
            if step % log_every == 0 or step == steps:
                rate = (step - start_step) / (time.time() - start)
                log(f"step {step}/{steps} | " + " ".join(f"{k} {v:.4g}" for k, v in last.items())
                    + f" | {rate:.2f} it/s | eta {(steps - step) / rate / 60:.1f}m")
            if save and (step % checkpoint_every == 0 or step == steps or Stop.requested):
                save(snapshot())
            if Stop.requested and step < steps:
                raise Interrupted(f"stopped at step {step}; continue with --resume")
    return snapshot()


@torch.no_grad()
def sample(generator, per_class, hot, device, classifier=None, draws=1, batch_size=500):
    """`per_class` images of every class: (images [N*per_class, C, H, W] in [0, 1], labels).

    Choice: the generator stays in train mode while sampling, so dropout and batch
    statistics keep varying the images (the paper credits dropout for diversity).
    Images are clamped to [0, 1], the valid range.
    With `draws` > 1, `draws * per_class` images are drawn per class and the `per_class`
    ones the `classifier` is most confident on are kept, in the order drawn.
    """
    generator.train()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class * draws)  # class-major
    latent_dim = generator.config["latent_dim"]
    images = torch.cat([generate(generator, y, hot, latent_dim, device)[0].clamp(0, 1).cpu()
                        for y in labels.split(batch_size)])
    if draws == 1:
        return images, labels
    # Choice (sampling, not in the paper): the paper's first premise, used by the attacker
    # at sampling time: training-like images are those the classifier is surest of.
    # log P(y|x) = -cross-entropy (as in premises): the order of P(y|x), without its rounding to 1.
    log_conf = torch.cat([-F.cross_entropy(classifier(x.to(device))[0], y.to(device), reduction="none").cpu()
                          for x, y in zip(images.split(batch_size), labels.split(batch_size))])  # [N*draws*per_class]
    # Per class, the per_class largest, in draw order. Naive reference: for each class c,
    #   rows = (labels == c).nonzero(); keep rows[log_conf[rows].argsort(descending=True)[:per_class]].sort()
    best = log_conf.view(NUM_CLASSES, draws * per_class).topk(per_class, dim=1).indices.sort(dim=1).values
    keep = (best + draws * per_class * torch.arange(NUM_CLASSES)[:, None]).flatten()  # [N*per_class] into images
    return images[keep], labels[keep]


# ---------------------------------------------------------------------------------
# 5. Evaluation: what the paper shows in pictures, as numbers
# ---------------------------------------------------------------------------------
# Two questions about a trained generator and its classifier:
#   Training-likeness  is each generated image closer (by SSIM, same class) to the
#                      classifier's training subset (a) than to held-out images of the
#                      same train split, never seen in training (b)?
#   Premises           on given images: mean confidence P(y|x), input-gradient norm,
#                      weight-gradient norm (the three things L_Recon asks for).

def ssim(x, y):
    """Mean SSIM of image pairs: x, y [B, C, H, W] in [0, 1] (broadcastable) -> [B].

    Wang et al. 2004 with its standard settings, the same as pytorch-msssim and as
    skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1): local statistics under an 11x11
    Gaussian window (sigma 1.5), kept only where the window lies inside the image
    ('valid': 18x18 positions for 28x28), SSIM averaged over positions, then channels.
    Naive reference: the float64 loops in tests/test_evaluation.py.
    """
    x, y = torch.broadcast_tensors(x, y)
    b, c, h, w = x.shape
    # g[i] = exp(-(i - 5)^2 / (2 * 1.5^2)) / sum_j exp(-(j - 5)^2 / (2 * 1.5^2)),  i = 0..10
    i = torch.arange(11, dtype=x.dtype, device=x.device) - 5
    g = torch.exp(-i ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    # E_w[t] at each valid position (p, q) = sum_{u,v} g[u] g[v] t[p+u, q+v] = (G_H t G_W^T)[p, q],
    # with G_n [n-10, n] banded, G_n[p, p+u] = g[u]: the window g g^T is separable.
    # Choice: matrix products, not F.conv2d: about 4x faster on a CPU for 28x28 images.
    def band(n):
        rows = torch.arange(n - 10, device=x.device)[:, None]
        m = torch.zeros(n - 10, n, dtype=x.dtype, device=x.device)
        m[rows, rows + torch.arange(11, device=x.device)] = g
        return m
    maps = torch.stack([x, y, x * x, y * y, x * y])  # [5, B, C, H, W], each channel on its own
    mu_x, mu_y, e_xx, e_yy, e_xy = band(h) @ maps @ band(w).T  # each [B, C, H-10, W-10]
    # sigma_x^2 = E_w[x^2] - mu_x^2,  sigma_xy = E_w[xy] - mu_x mu_y   (weights sum to 1: divide by N, not N - 1)
    var_x, var_y, cov = e_xx - mu_x ** 2, e_yy - mu_y ** 2, e_xy - mu_x * mu_y
    # C1 = (K1 L)^2, C2 = (K2 L)^2 with K1 = 0.01, K2 = 0.03 and data range L = 1
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    # SSIM(x, y) = ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean((2, 3)).mean(1)  # [B, C, H-10, W-10] -> [B]


def heldout_indices(labels, subset_indices, seed):
    """Indices of a held-out set for the training subset: as many images of each class
    as the subset has, drawn from the rest of the same train split. Sorted.

    labels [n] are the whole train split's. Never overlaps `subset_indices`; the same
    `seed` gives the same set. Choice: like draw_subset, its own torch.Generator, so
    it depends on the seed alone; classes are drawn in order 0..N-1.
    """
    g = torch.Generator().manual_seed(seed)
    outside = torch.ones(len(labels), dtype=torch.bool)
    outside[subset_indices] = False
    counts = torch.bincount(labels[subset_indices], minlength=NUM_CLASSES)  # [N]
    picked = []
    for c in range(NUM_CLASSES):
        pool = (outside & (labels == c)).nonzero().squeeze(1)  # class c, not in the subset
        if len(pool) < counts[c]:
            raise TLDRError(f"no held-out set: the training subset has {counts[c]} images of class {c} "
                            f"and only {len(pool)} are left outside it; use a smaller --subset")
        picked.append(pool[torch.randperm(len(pool), generator=g)[:counts[c]]])
    return torch.cat(picked).sort().values


def nearest(gen, gen_labels, ref, ref_labels, top_k=50, max_pairs=4096):
    """Each generated image's `top_k` most pixel-correlated reference images of its own
    class, re-ranked by SSIM.

    gen [G, C, H, W], gen_labels [G], ref [R, C, H, W], ref_labels [R], all in [0, 1].
    Returns (ssim [G, top_k], index [G, top_k] into ref), best first, so column 0 is
    the nearest neighbour. Where a class has fewer than top_k references, the row ends
    in SSIM -inf, index -1. At most `max_pairs` SSIMs are computed at a time, which
    bounds memory (about 250 MB at 28x28) whatever G and R are.

    Choice: a prefilter, because SSIM on every same-class pair (18 million for 3,000
    images against a 60,000 subset) takes about 25 minutes on 2 CPU cores. The Pearson
    correlation of the flattened images
      r(x, y) = <x - mean(x), y - mean(y)> / (||x - mean(x)|| ||y - mean(y)||)
    is one matrix product per class; SSIM is then computed on the top_k candidates
    only (20 seconds). With top_k >= the class size it is exact (tested); on MNIST,
    top_k = 50 found the same nearest neighbour as all pairs for every image checked.
    """
    def centred_unit(images):  # [n, C, H, W] -> [n, C*H*W], rows centred, unit length
        v = images.flatten(1)
        return F.normalize(v - v.mean(1, keepdim=True), dim=1)

    best_ssim = torch.full((len(gen), top_k), float("-inf"), device=gen.device)
    best_index = torch.full((len(gen), top_k), -1, dtype=torch.long, device=gen.device)
    for c in gen_labels.unique().tolist():
        rows = (gen_labels == c).nonzero().squeeze(1)  # [G_c] generated images of class c
        refs = (ref_labels == c).nonzero().squeeze(1)  # [R_c] references of class c
        if len(refs) == 0:
            raise TLDRError(f"no reference image of class {c} to compare generated images with")
        k = min(top_k, len(refs))
        ref_unit = centred_unit(ref[refs])  # [R_c, D]
        for part in rows.split(max(1, max_pairs // k)):  # [g] at a time, g * k <= max_pairs
            r = centred_unit(gen[part]) @ ref_unit.T  # [g, R_c]: r(x_i, y_j)
            cand = refs[r.topk(k, dim=1).indices]     # [g, k] indices into ref
            s = ssim(gen[part].repeat_interleave(k, 0), ref[cand.flatten()])  # [g*k]: pair (i, j) at i*k + j
            s, order = s.view(len(part), k).sort(1, descending=True)
            best_ssim[part, :k] = s
            best_index[part, :k] = cand.gather(1, order)
    return best_ssim, best_index


def one_to_one_matches(ssims, indices, threshold=0.4):
    """How many distinct reference images can be matched one-to-one to generated
    images at SSIM >= threshold: the size of a maximum matching in the bipartite graph
    with an edge (generated i, reference j) for each candidate pair of nearest() with
    SSIM >= threshold. Each generated and each reference image is used at most once;
    classes never mix, since nearest() only pairs images of the same class.

    ssims, indices [G, k] from nearest(). Only its top_k candidates are edges.
    Choice: a maximum matching (Kuhn's augmenting paths), not a greedy one: the greedy
    count depends on the order pairs are taken in and can be lower (tested).
    """
    edges = [[j for s, j in zip(s_row, j_row) if s >= threshold]
             for s_row, j_row in zip(ssims.tolist(), indices.tolist())]
    owner = {}  # reference j -> the generated image matched to it

    def augment(i, seen):  # find i a reference: a free one, or one whose owner can move
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 2 * len(edges) + 100))  # paths can be G long
    return sum(augment(i, set()) for i in range(len(edges)))


def training_likeness(gen, gen_labels, train, train_labels, held=None, held_labels=None, top_k=50):
    """Do generated images look like the classifier's training subset (a) more than like
    held-out images of the same train split (b)? Use heldout_indices() for (b).

    Returns a dict:
      ssim_train, ssim_heldout   mean over generated images of the SSIM to the nearest
                                 same-class image of (a), of (b)
      win_rate                   fraction of generated images whose match in (a) beats
                                 their match in (b); ties count half. 0.5 = no leak
      matched_train_040          one_to_one_matches() at SSIM >= 0.4 into (a): the
                                 criterion used in related work
      matched_heldout_040        the same into (b): what the count is without any leak
      nearest_train, nearest_heldout   [G] indices into train, held (for nearest.png)
    Without (b) (held=None: e.g. the subset is the whole split) the (b) entries are None.
    """
    s_a, i_a = nearest(gen, gen_labels, train, train_labels, top_k)  # [G, k]
    a = s_a[:, 0]  # [G] nearest-neighbour SSIMs in (a)
    result = {"ssim_train": a.mean().item(), "matched_train_040": one_to_one_matches(s_a, i_a, 0.4),
              "nearest_train": i_a[:, 0], "ssim_heldout": None, "win_rate": None,
              "matched_heldout_040": None, "nearest_heldout": None}
    if held is None:
        return result
    s_b, i_b = nearest(gen, gen_labels, held, held_labels, top_k)
    b = s_b[:, 0]
    # win rate = 1/G * sum_i ([a_i > b_i] + 1/2 [a_i = b_i])
    win = ((a > b).double() + 0.5 * (a == b).double()).mean()
    return result | {"ssim_heldout": b.mean().item(), "win_rate": win.item(),
                     "matched_heldout_040": one_to_one_matches(s_b, i_b, 0.4), "nearest_heldout": i_b[:, 0]}


def within_class_ssim(images, labels, per_class=20):
    """Diversity: the mean SSIM between two different images of the same class, over
    `per_class` images of each class present, evenly spaced through it (so from every
    generator when samples are stored generator by generator), all ordered pairs i != j.
    1 = every image of a class is the same; real MNIST / FashionMNIST training images
    score about 0.21 / 0.23. Lower is more diverse."""
    means = []
    for c in labels.unique().tolist():
        x = images[labels == c]
        x = x[torch.linspace(0, len(x) - 1, min(per_class, len(x))).round().long()]  # [k, C, H, W]
        k = len(x)
        if k < 2:
            continue
        i, j = torch.cartesian_prod(torch.arange(k), torch.arange(k)).T  # all k*k ordered pairs
        off = i != j
        means.append(ssim(x[i[off]], x[j[off]]).mean())
    return torch.stack(means).mean().item() if means else float("nan")


def premises(classifier, images, labels, batch_size=100):
    """The paper's three premises, for `classifier` (eval mode) on (images, labels):
    means over the images of
      confidence        P(y|x) = softmax(f(x))_y,  f(x) = the logits
      input_grad_norm   ||d L(f(x), y) / dx||,  x the [0, 1] image, all pixels and channels
      weight_grad_norm  ||grad_theta L(f(x), y)||,  grad_norms(): the same code as L_Grad
    with L = cross-entropy = -log P(y|x).

    Choice: the input gradient is that of the loss -log P(y|x), the same L as the
    weight gradient (and as L_Grad). The gradient of P(y|x) itself,
    P(y|x) * d log P(y|x)/dx, shrinks as the confidence nears 1 and would largely
    measure confidence again.
    """
    classifier.eval()
    device = next(classifier.parameters()).device
    totals = {"confidence": 0.0, "input_grad_norm": 0.0, "weight_grad_norm": 0.0}
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        x, y = x.to(device).requires_grad_(True), y.to(device)
        loss = F.cross_entropy(classifier(x)[0], y, reduction="none")  # [B]: L_i = -log P(y_i|x_i)
        # In eval mode the images do not interact, so row i of d(sum_j L_j)/dx is dL_i/dx_i.
        (dx,) = torch.autograd.grad(loss.sum(), x)  # [B, C, H, W]
        totals["confidence"] += loss.detach().neg().exp().sum().item()  # P(y|x) = exp(-L)
        totals["input_grad_norm"] += dx.flatten(1).norm(dim=1).sum().item()
        totals["weight_grad_norm"] += grad_norms(classifier, x.detach(), y).detach().sum().item()
    return {name: total / len(labels) for name, total in totals.items()}


@torch.no_grad()
def samples_ortho(classifier, images, batch_size=500):
    """L_Ortho (ortho_loss) over all of `images` at once instead of one training batch:
    1/N^2 * sum_{i,j} (G_ij - delta_ij)^2 over the classifier's penultimate features of
    the N images: the squared cosines of all N^2 pairs averaged, the N pairs of an image
    with itself counting 0 (G_ii = 1 after normalising). Something the attacker can
    compute: invert.py --keep ranks generators by it (README, "Keeping the generators
    whose samples spread most")."""
    classifier.eval()
    device = next(classifier.parameters()).device
    features = torch.cat([classifier(x.to(device))[1] for x in images.split(batch_size)])  # [N, D]
    return ortho_loss(features).item()


def nearest_grid(gen, train, held, result):
    """Images for nearest.png: each generated image followed by its nearest training and
    nearest held-out image. [3G, C, H, W]; save_image(grid, nrow=3 * k) puts k triples a row."""
    triples = [gen, train[result["nearest_train"]], held[result["nearest_heldout"]]]
    return torch.stack(triples, 1).flatten(0, 1)


# ---------------------------------------------------------------------------------
# 6. Plumbing shared by the scripts
# ---------------------------------------------------------------------------------

def pick_device(name):
    """'auto' picks cuda, then mps, then cpu; an asked-for device that is missing is an error."""
    has = {"cuda": torch.cuda.is_available(),
           "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
           "cpu": True}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if has[d])
    if not has[name]:
        raise TLDRError(f"--device {name} was asked for but this machine has no {name}; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA
    torch.backends.cudnn.benchmark = False


def atomic_write(path, write):
    """Write through `write(tmp_path)` to a temporary file beside `path`, then rename:
    a crash or Ctrl-C never leaves a half-written file under the final name."""
    # Not tempfile.mkstemp: its files are private (mode 0600), and outputs should be shareable.
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_pt(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_json(obj, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


# What the scripts read from each kind of checkpoint (train_classifier.py and invert.py write them).
CHECKPOINT_KEYS = {"classifier": ("model", "config", "dataset", "seed", "subset_indices", "epoch", "epochs",
                                  "optimizer", "rng", "test_accuracy"),
                   "generator": ("model", "config", "dataset", "steps", "reconstruct", "hot", "step",
                                 "optimizer", "rng", "terms"),
                   "screen": ("generators", "keep", "screen_steps", "ortho", "kept")}  # invert.py --keep


def load_checkpoint(path, kind):
    """Load a checkpoint as data only (weights_only=True: no code runs), check its kind."""
    if not os.path.isfile(path):
        raise TLDRError(f"{path}: no such file")
    import warnings
    try:
        with warnings.catch_warnings():  # torch warns about some foreign pickles; the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "GLOBAL " in str(e):  # the pickle names a function or class to call: loading it would run code
            name = str(e).split("GLOBAL ")[1].split()[0]
            raise TLDRError(f"{path}: refusing to load it: it would run Python code ({name}), "
                            "a checkpoint holds only tensors and plain data")
        raise TLDRError(f"{path}: not a readable checkpoint (truncated, corrupt or not written by "
                        f"torch.save: {type(e).__name__})")
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise TLDRError(f"{path}: not a TLDR checkpoint")
    if ckpt["kind"] != kind:
        raise TLDRError(f"{path}: is a {ckpt['kind']} checkpoint, expected a {kind}")
    missing = [key for key in CHECKPOINT_KEYS[kind] if key not in ckpt]
    if missing:
        raise TLDRError(f"{path}: an incomplete or older {kind} checkpoint (no {', '.join(missing)}); "
                        "train it again (--overwrite)")
    return ckpt


def run_script(main):
    """Run a script's main(): TLDRError becomes one 'error:' line and exit status 1
    (130 for a clean stop on Ctrl-C)."""
    try:
        main()
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # Ctrl-C outside a training loop: nothing half-written to keep
        print("interrupted; continue with --resume", file=sys.stderr)
        sys.exit(130)
    except TLDRError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def one_line_errors(parser):
    """argparse prints usage + error on two lines; print just the error, on one."""
    def error(message):
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
    parser.error = error
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each flag's default and the script's docstring as written."""


def add_common_flags(parser):
    """The flags every script takes; argparse errors come out as one line."""
    one_line_errors(parser)
    parser.add_argument("--dataset", default="mnist", choices=DATASETS, help="which torchvision dataset")
    parser.add_argument("--subset", type=int, default=None,
                        help="train on this many images drawn from the train split by --seed; None: the whole split")
    parser.add_argument("--data-root", default="./data", help="torchvision root; missing files are downloaded")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="auto = cuda, else mps, else cpu")
    parser.add_argument("--seed", type=int, default=1, help="seeds the subset, the weights and every sample")
    parser.add_argument("--out-dir", default="runs", help="run folders are made under this folder")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue a stopped run from its folder")
    again.add_argument("--overwrite", action="store_true", help="replace a finished or stopped run's checkpoints")
    return parser


def check_subset(args):
    n_train = DATASETS[args.dataset][3]
    if args.subset is not None and not 0 < args.subset <= n_train:
        raise TLDRError(f"--subset must be between 1 and {n_train} (the {args.dataset} train split), got {args.subset}")


def classifier_dir(out_dir, dataset, subset, seed):
    """Where train_classifier.py puts the classifier for these settings by default."""
    return os.path.join(out_dir, f"classifier-{dataset}-{subset or 'full'}-seed{seed}")


def prepare_run_dir(run_dir, finished_file, args):
    """Make `run_dir`; refuse to touch a finished run unless --resume or --overwrite.
    Returns True when the run is already finished and --resume was given."""
    finished = os.path.exists(os.path.join(run_dir, finished_file))
    if finished and not (args.resume or args.overwrite):
        raise TLDRError(f"{run_dir} already holds a finished run; pass --resume to keep it "
                        "or --overwrite to train again")
    files = set(os.listdir(run_dir)) - {"args.json"} if os.path.isdir(run_dir) else set()
    if files and not (args.resume or args.overwrite or finished):
        raise TLDRError(f"{run_dir} holds a stopped run; pass --resume to continue it or --overwrite to start again")
    if args.overwrite:  # so that a replacement, if stopped, neither looks finished nor resumes old checkpoints
        for f in files:
            if f == finished_file or f.endswith(".pt"):
                os.remove(os.path.join(run_dir, f))
    for f in files:  # a save cut short by a kill leaves its temporary file (atomic_write) behind
        if f.startswith(".") and f.endswith(".tmp"):
            os.remove(os.path.join(run_dir, f))
    os.makedirs(run_dir, exist_ok=True)
    args_path = os.path.join(run_dir, "args.json")
    if not (args.resume and os.path.exists(args_path)):  # a resumed run keeps the settings it started with
        save_json(vars(args) | {"command": " ".join(sys.argv)}, args_path)
    return finished and args.resume
