"""Network inversion (section 3.3): train generators against a frozen classifier.

    python invert.py --dataset fmnist --subset 10000

Each of --generators generators learns to make images the classifier assigns to the
class it was conditioned on, under L_Inv = alpha*L_KL + beta*L_CE + gamma*L_Cosine
+ delta*L_Ortho with soft conditioning vectors. reconstruct.py runs this same script
with hot vectors and the reconstruction terms of section 3.4 switched on.

Writes <out-dir>/<invert|reconstruct>-<dataset>-<subset>-<conditioning>[-shift<N>][-flip]-seed<seed>/:
generator<k>.pt, samples.pt, grid.png, nearest.png, metrics.json, args.json (and
screen.pt with --keep). When --classifier is not given, the classifier for
--dataset/--subset/--seed is taken from where train_classifier.py puts it, and trained
first if it is not there.

Then it measures the samples (tldr.py section 5): how close each is (SSIM, same class)
to the classifier's training subset and to a held-out set of the same train split
(metrics.json "training_likeness"; nearest.png shows the pairs), and the classifier's
confidence, input- and weight-gradient norms on them ("premises").
"""
import argparse
import os

import torch

import tldr
import train_classifier

# Default loss weights and epsilon: (inversion, reconstruction). alpha' (alpha_pert),
# beta' (beta_pert), eta1..3 and eta_bn are 0 in inversion, which is exactly L_Inv.
# Choice: gamma = delta = 10 in reconstruction, where hot vectors give no diversity of
# their own: fewer generators collapse to one shape per class (README, tuning notes).
DEFAULTS = {"alpha": (1.0, 1.0), "beta": (1.0, 1.0), "gamma": (1.0, 10.0), "delta": (1.0, 10.0),
            "alpha_pert": (0.0, 1.0), "beta_pert": (0.0, 1.0), "eta1": (0.0, 0.05),
            "eta2": (0.0, 1.0), "eta3": (0.0, 1.0), "eta_bn": (0.0, 10.0)}
HELP = {"alpha": "weight of L_KL", "beta": "weight of L_CE", "gamma": "weight of L_Cosine",
        "delta": "weight of L_Ortho", "alpha_pert": "alpha', weight of L_KL on perturbed images",
        "beta_pert": "beta', weight of L_CE on perturbed images", "eta1": "weight of L_Var",
        "eta2": "weight of L_Pix", "eta3": "weight of L_Grad",
        "eta_bn": "weight of L_BN, batch-norm statistics matching (not in the paper; 0 gives the paper's L_Recon)"}


def parse_args(argv=None, reconstruct=False, doc=__doc__):
    p = argparse.ArgumentParser(description=doc, formatter_class=tldr.HelpFormatter)
    tldr.add_common_flags(p)
    p.add_argument("--classifier", default=None,
                   help="classifier.pt to invert; None: the one for --dataset/--subset/--seed, trained if missing")
    p.add_argument("--conditioning", default="vector-matrix", choices=tldr.CONDITIONINGS,
                   help="how the generator is told the class (paper 3.2)")
    p.add_argument("--generators", type=int, default=3, help="how many generators to train (the paper shows 3)")
    p.add_argument("--keep", type=int, default=None, metavar="N",
                   help="train every generator --screen-steps steps, then only the N whose samples have the lowest "
                        "L_Ortho under the classifier on to --steps, for samples.pt, the grids and the evaluation; "
                        "None: keep all")
    p.add_argument("--screen-steps", type=int, default=100,
                   help="with --keep: the steps after which the generators are ranked (--steps: rank at the end)")
    p.add_argument("--try-negatives", action="store_true",
                   help="with --keep: after --screen-steps, copy each generator as its negative (drawing 1 - x), "
                        "train both --screen-steps more, and go on with the one whose samples' mean pixel is "
                        "nearer the classifier's (that of its training images); they are then ranked")
    p.add_argument("--steps", type=int, default=1500, help="training steps per generator")
    p.add_argument("--batch-size", type=int, default=128, help="generated images per training step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the generator")
    p.add_argument("--latent-dim", type=int, default=64, help="size of the latent vector z")
    p.add_argument("--width", type=int, default=64, help="generator width (channels of its last hidden layer)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout in the generator layers before the matrix (up to N x N)")
    p.add_argument("--output", default="sigmoid", choices=tldr.OUTPUTS,
                   help="generator output: sigmoid into [0, 1], or linear as in the paper (then only L_Pix bounds it)")
    only = "" if reconstruct else " (reconstruct.py only: inversion ignores it)"
    for name, (inv, rec) in DEFAULTS.items():
        p.add_argument("--" + name.replace("_", "-"), type=float, default=rec if reconstruct else inv,
                       help=HELP[name] + (only if inv == 0 else ""))  # 0 in inversion: a term of L_Recon only
    p.add_argument("--epsilon", type=float, default=0.1,
                   help="size of the L-infinity perturbation (uniform noise) for the ^pert terms" + only)
    p.add_argument("--fast-grad-norm", action="store_true",
                   help="compute L_Grad with the exact one-backward-pass method instead of torch.func" + only)
    p.add_argument("--shift", type=int, default=0,
                   help="show the classifier the generated batch moved by up to this many pixels each way, "
                        "at random each step (0: off)")
    p.add_argument("--flip", type=int, nargs="*", metavar="CLASS", default=None,
                   help="show the classifier the images of these classes (every class when none is named) "
                        "mirrored left-right, at a random half of the steps; for classes that look the same "
                        "mirrored, such as clothes seen from the front, not shoes seen from the side or digits")
    if reconstruct:
        p.add_argument("--soft-vectors", action="store_true",
                       help="condition on soft vectors, as in inversion, instead of hot ones (an ablation)")
    p.add_argument("--samples-per-class", type=int, default=100, help="images saved per class and generator")
    # Choice: 3 in reconstruction (README, tuning notes); 1 keeps every image drawn, as the paper does.
    p.add_argument("--draws", type=int, default=3 if reconstruct else 1,
                   help="draw this many times --samples-per-class images per class and keep the ones "
                        "the classifier is most confident on (1: keep all)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="save the training state every so many steps")
    p.add_argument("--log-every", type=int, default=50, help="print the loss terms every so many steps")
    p.add_argument("--run-dir", default=None,
                   help="None: <out-dir>/<mode>-<dataset>-<subset>-<conditioning>[-shift<N>][-flip]-seed<seed>")
    args = p.parse_args(argv)
    args.reconstruct = reconstruct
    args.hot = reconstruct and not getattr(args, "soft_vectors", False)  # the flag is reconstruct.py's
    for flag in ("generators", "steps", "screen_steps", "batch_size", "samples_per_class", "draws", "checkpoint_every",
                 "log_every"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.keep is not None and not 1 <= args.keep <= args.generators:
        p.error(f"--keep must be from 1 to --generators ({args.generators}), got {args.keep}")
    if args.try_negatives and not (args.keep and 2 * args.screen_steps <= args.steps):
        p.error("--try-negatives needs --keep and --steps of at least twice --screen-steps")
    if args.batch_size < 2:  # L_Cosine averages over pairs of images
        p.error("--batch-size must be at least 2")
    if args.shift < 0:
        p.error("--shift must be 0 or more")
    # None: no --flip; []: --flip alone, every class
    args.flip = list(range(tldr.NUM_CLASSES)) if args.flip == [] else sorted(set(args.flip or []))
    if any(not 0 <= c < tldr.NUM_CLASSES for c in args.flip):
        p.error(f"--flip takes class numbers from 0 to {tldr.NUM_CLASSES - 1}")
    return args


def get_classifier(args, device, log):
    """Load --classifier, or the default one for these settings (training it if missing)."""
    path = args.classifier
    if path is None:
        path = os.path.join(tldr.classifier_dir(args.out_dir, args.dataset, args.subset, args.seed), "classifier.pt")
        if not os.path.exists(os.path.join(os.path.dirname(path), "metrics.json")):
            log(f"no trained classifier at {path}: training one first")
            flags = ["--dataset", args.dataset, "--data-root", args.data_root, "--device", args.device,
                     "--seed", str(args.seed), "--out-dir", args.out_dir]
            flags += ["--subset", str(args.subset)] if args.subset else []
            flags += ["--resume"] if os.path.exists(path) else []
            train_classifier.run(train_classifier.parse_args(flags), log=log)
    ckpt = tldr.load_checkpoint(path, "classifier")
    if ckpt["dataset"] != args.dataset:
        raise tldr.TLDRError(f"{path}: is a classifier for {ckpt['dataset']}, but --dataset is {args.dataset}")
    _, channels, size, _ = tldr.DATASETS[args.dataset]
    if (ckpt["config"]["channels"], ckpt["config"]["image_size"]) != (channels, size):
        raise tldr.TLDRError(f"{path}: takes {ckpt['config']['channels']}x{ckpt['config']['image_size']} images, "
                             f"{args.dataset} has {channels}x{size}")
    if ckpt["epoch"] != ckpt["epochs"]:
        raise tldr.TLDRError(f"{path}: training stopped after epoch {ckpt['epoch']}/{ckpt['epochs']}; "
                             "finish it with train_classifier.py --resume")
    model = tldr.Classifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def train_one(k, args, classifier, device, run_dir, log, steps=None, resume=None):
    """Train (or resume, or just load) generator k to step `steps` of its --steps (default:
    all); returns it and its last loss terms. `resume` (default --resume): start from its checkpoint."""
    _, channels, size, _ = tldr.DATASETS[args.dataset]
    # Each generator its own seed, set before its weights are drawn: generator k starts the
    # same whatever ran before it in this process (a classifier, generators 0..k-1, or none).
    tldr.seed_everything(args.seed * 1000 + k)
    gen = tldr.Generator(conditioning=args.conditioning, channels=channels, image_size=size,
                         latent_dim=args.latent_dim, width=args.width, dropout=args.dropout,
                         output=args.output).to(device)
    path = os.path.join(run_dir, f"generator{k}.pt")
    weights = {name: getattr(args, name) for name in DEFAULTS}
    # Everything that shapes the training; a run resumes only with all of it unchanged.
    meta = {"kind": "generator", "config": gen.config, "dataset": args.dataset, "steps": args.steps,
            "reconstruct": args.reconstruct, "hot": args.hot, "batch_size": args.batch_size, "lr": args.lr,
            "weights": weights, "epsilon": args.epsilon, "shift": args.shift, "flip": args.flip, "index": k}
    state = None
    if (args.resume if resume is None else resume) and os.path.exists(path):
        state = {"shift": 0, "flip": []} | tldr.load_checkpoint(path, "generator")  # saved before these flags
        if isinstance(state["flip"], bool):  # saved when --flip took no classes: every class or none
            state["flip"] = list(range(tldr.NUM_CLASSES)) if state["flip"] else []
        for key in ("config", "dataset", "steps", "reconstruct", "hot", "batch_size", "lr", "weights", "epsilon",
                    "shift", "flip"):
            if state.get(key) != meta[key]:
                raise tldr.TLDRError(f"{path}: was started with {key}={state.get(key)}, not {meta[key]}; "
                                     "resume with the same flags, or use --overwrite")
        if steps and state["step"] > steps:  # a stopped screening, resumed with other flags
            raise tldr.TLDRError(f"{path}: is past step {steps}, where --keep ranks the generators; "
                                 "resume with the same flags, or use --overwrite")
        log(f"generator {k}: resuming at step {state['step']}/{args.steps}")
    try:
        state = tldr.train_generator(
            gen, classifier, reconstruct=args.reconstruct, steps=steps or args.steps, batch_size=args.batch_size,
            lr=args.lr, weights=weights, epsilon=args.epsilon, device=device,
            grad_method="fast" if args.fast_grad_norm else "func", hot=args.hot, flip=args.flip, shift=args.shift,
            state=state, save=lambda s: tldr.save_pt(meta | s, path), checkpoint_every=args.checkpoint_every,
            log_every=args.log_every, log=lambda line: log(f"generator {k}: {line}"))
    except tldr.TLDRError as e:  # say which generator stopped (a non-finite loss, Ctrl-C); same type
        raise type(e)(f"generator {k}: {e}") from None
    return gen, state["terms"]


def screen(args, classifier, device, run_dir, log):
    """--keep: train every generator --screen-steps steps (at most --steps), sample it, and
    return the --keep whose samples have the lowest L_Ortho (tldr.samples_ortho), in generator
    order, and every generator's value. With --try-negatives, each generator and its negative
    train --screen-steps more first, and only the one of each pair nearer the classifier's mean
    pixel is ranked. screen.pt records the outcome, so --resume keeps the same ones."""
    path = os.path.join(run_dir, "screen.pt")
    flags = {"generators": args.generators, "keep": args.keep, "screen_steps": args.screen_steps,
             "try_negatives": args.try_negatives}
    if args.resume and os.path.exists(path):
        saved = {"try_negatives": False} | tldr.load_checkpoint(path, "screen")  # saved before the flag
        for key, value in flags.items():
            if saved[key] != value:
                raise tldr.TLDRError(f"{path}: was screened with --{key.replace('_', '-')} {saved[key]}, not "
                                     f"{value}; resume with the same flags, or use --overwrite")
        log(f"screened before, as {path} records: keeping generator(s) {' '.join(map(str, saved['kept']))}")
        return saved["kept"], saved["ortho"]
    n, steps = args.generators, min(args.screen_steps, args.steps)
    candidates, record = list(range(n)), {}
    if args.try_negatives:
        # Choice (not in the paper): against the deepest FashionMNIST classifier here most
        # generators draw the negatives of the items (bright ground, dark items) by step 100,
        # and stay so. Turned over (1 - x) they draw the items and stay so. Against that
        # classifier, which way round is right shows in the mean pixel, which it stores (its
        # normalisation, the training images' mean): of a generator and its negative, the one
        # drawing negatives stays further from it (not against the 1,000-image classifier,
        # where the rule fails: README). So generator n + k is generator k at
        # --screen-steps turned into its negative, both train --screen-steps more, and of
        # each pair the one whose samples' mean pixel is nearer the classifier's is ranked
        # (README, "FashionMNIST: trying the negatives").
        for k in range(n):
            negative = os.path.join(run_dir, f"generator{n + k}.pt")
            if args.resume and os.path.exists(negative):
                continue
            gen, _ = train_one(k, args, classifier, device, run_dir, log, steps=steps)
            names = [name for name, _ in gen.named_parameters()]  # the optimizer's state is numbered in this order
            state = tldr.load_checkpoint(os.path.join(run_dir, f"generator{k}.pt"), "generator")
            # The last layer computes a = W h + b; negating W and b gives -a, and
            # sigmoid(-a) = 1 - sigmoid(a): the same images, negative. (Linear output: -a + 1.)
            for name in ("to_image.3.weight", "to_image.3.bias"):
                state["model"][name] = -state["model"][name]
                adam = state["optimizer"]["state"][names.index(name)]
                adam["exp_avg"] = -adam["exp_avg"]  # Adam's running mean of the gradient turns with the weights
            if args.output == "linear":
                state["model"]["to_image.3.bias"] += 1
            tldr.save_pt(state | {"index": n + k}, negative)
            log(f"generator {k}: copied at step {steps} as its negative, generator {n + k}")
        candidates, steps = list(range(2 * n)), 2 * steps
    ortho, gap = [], []
    for k in candidates:
        gen, _ = train_one(k, args, classifier, device, run_dir, log, steps=steps,
                           resume=args.resume or args.try_negatives)  # negatives: on from the copies
        x, _ = tldr.sample(gen, args.samples_per_class, args.hot, device, classifier, args.draws)
        ortho.append(tldr.samples_ortho(classifier, x))
        # |mean pixel of the samples - the classifier's mean pixel|, over the channels
        gap.append((x.mean((0, 2, 3)) - classifier.mean.flatten().cpu()).norm().item())
    if args.try_negatives:
        candidates = [k if gap[k] <= gap[n + k] else n + k for k in range(n)]  # one of each pair
        record = {"mean_gap": gap}
        log(f"mean pixel of each generator's samples after {steps} steps, distance to the classifier's: "
            f"{' '.join(f'{g:.3f}' for g in gap)}; ranking generator(s) {' '.join(map(str, candidates))}")
    kept = sorted(sorted(candidates, key=lambda k: ortho[k])[:args.keep])  # the lowest, in order
    log(f"L_Ortho over each generator's samples after {steps} steps: "
        f"{' '.join(f'{o:.4f}' for o in ortho)}; keeping generator(s) {' '.join(map(str, kept))}")
    tldr.save_pt({"kind": "screen", "ortho": ortho, "kept": kept} | record | flags, path)
    return kept, ortho


def save_grid(images, labels, generator_ids, kept, path, train_images=None, per_generator=4):
    """Rows = classes; `per_generator` columns from each generator in `kept`; then, if
    given, a last column with one training image of that class (reconstruction)."""
    from torchvision.utils import save_image  # imported here, as in tldr.load_split, so errors come fast
    rows = []
    for c in range(tldr.NUM_CLASSES):
        row = [images[(labels == c) & (generator_ids == g)][:per_generator] for g in kept]
        if train_images is not None:
            row.append(train_images[c][None])
        rows.append(torch.cat(row))
    grid = torch.cat(rows)
    tldr.atomic_write(path, lambda tmp: save_image(grid, tmp, nrow=len(rows[0]), padding=2, pad_value=0.5, format="png"))


def save_nearest(images, labels, generator_ids, kept, train, held, likeness, path):
    """Rows = classes; for each generator in `kept`, its first image of that class followed
    by the nearest training image and the nearest held-out image (tldr.nearest_grid)."""
    from torchvision.utils import save_image
    first = torch.stack([((labels == c) & (generator_ids == g)).nonzero()[0, 0]
                         for c in range(tldr.NUM_CLASSES) for g in kept])  # [N*len(kept)], row by row
    picked = {"nearest_train": likeness["nearest_train"][first], "nearest_heldout": torch.zeros_like(first)}
    if held is None:  # Choice: keep the triples, with a blank image where the held-out one would be
        held = torch.zeros_like(images[:1])
    else:
        picked["nearest_heldout"] = likeness["nearest_heldout"][first]
    grid = tldr.nearest_grid(images[first], train, held, picked)  # [3*N*len(kept), C, H, W]
    tldr.atomic_write(path, lambda tmp: save_image(grid, tmp, nrow=3 * len(kept), padding=2, pad_value=0.5,
                                                   format="png"))


def run(args, log=print):
    device = tldr.pick_device(args.device)
    tldr.check_subset(args)
    mode = "reconstruct" if args.reconstruct else "invert"
    augment = (f"-shift{args.shift}" if args.shift else "") + ("-flip" if args.flip else "")
    run_dir = args.run_dir or os.path.join(
        args.out_dir, f"{mode}-{args.dataset}-{args.subset or 'full'}-{args.conditioning}{augment}-seed{args.seed}")
    classifier, clf_ckpt = get_classifier(args, device, log)  # a bad --classifier changes no run folder
    if tldr.prepare_run_dir(run_dir, "metrics.json", args):
        log(f"{run_dir} is already finished; nothing to resume")
        return run_dir
    # The train split, for the grid's last column in reconstruction and for the evaluation;
    # read now, so missing data fails before training.
    split_x, split_y = tldr.load_split(args.dataset, args.data_root, train=True)
    subset = clf_ckpt["subset_indices"]
    train_x, train_y = split_x[subset], split_y[subset]  # the images the classifier saw
    log(f"{mode}: {args.generators} {args.conditioning} generator(s) x {args.steps} steps on {device}, into {run_dir}")

    # Choice (not in the paper): some generators fail (negatives of the items from their first
    # 100 steps, which end as hollow frames and dark outlines), and the attacker cannot compare
    # with the training data to find them. L_Ortho over all of a generator's samples, which the
    # attacker can compute, ranks generators against the deepest FashionMNIST classifier here
    # much as their nearest SSIM to the training data does, and already after 100 steps (README,
    # "Keeping the generators whose samples spread most"); --keep trains only the lowest on.
    # On MNIST 10,000 it ranks last after 100 steps the generator that ends drawing stroke
    # fragments (ranked at the end, it misses it). Measured on two classifiers: no general rule.
    if args.resume and not args.keep and os.path.exists(os.path.join(run_dir, "screen.pt")):
        raise tldr.TLDRError(f"{run_dir}: was started with --keep; resume with the same flags, or use --overwrite")
    kept, screen_ortho = screen(args, classifier, device, run_dir, log) if args.keep else (
        list(range(args.generators)), None)
    images, labels, gen_ids = [], [], []
    n = 2 * args.generators if args.try_negatives else args.generators  # with the negatives' copies
    terms, ortho = [None] * n, [None] * n  # null for the generators not kept
    for k in kept:
        # after screening, each kept generator goes on from its checkpoint
        gen, terms[k] = train_one(k, args, classifier, device, run_dir, log, resume=args.resume or bool(args.keep))
        x, y = tldr.sample(gen, args.samples_per_class, args.hot, device, classifier, args.draws)
        images.append(x), labels.append(y), gen_ids.append(torch.full_like(y, k))
        ortho[k] = tldr.samples_ortho(classifier, x)
    log(f"L_Ortho over each kept generator's samples: {' '.join(f'{ortho[k]:.4f}' for k in kept)}")
    images, labels, gen_ids = torch.cat(images), torch.cat(labels), torch.cat(gen_ids)
    tldr.save_pt({"images": images, "labels": labels, "generator": gen_ids}, os.path.join(run_dir, "samples.pt"))
    # In reconstruction, a last column with one training image of each class (blank if the subset has none).
    train_column = torch.stack([train_x[train_y == c][0] if (train_y == c).any() else torch.zeros_like(train_x[0])
                                for c in range(tldr.NUM_CLASSES)]) if args.reconstruct else None
    save_grid(images, labels, gen_ids, kept, os.path.join(run_dir, "grid.png"), train_column)

    # The evaluation comes after samples.pt and grid.png, so a failure in it loses no
    # training; metrics.json, which marks the run finished, comes last.
    acc, conf = tldr.evaluate(classifier, images, labels, device)
    log(f"classifier on the {len(images)} generated images: accuracy {acc:.4f}, mean confidence {conf:.4f}")
    try:
        held = tldr.heldout_indices(split_y, subset, clf_ckpt["seed"])  # the set train_classifier.py used
        held_x, held_y = split_x[held], split_y[held]
    except tldr.TLDRError as e:  # e.g. the subset is the whole split
        log(f"training-likeness against the training subset only: {e}")
        held_x = held_y = None
    likeness = tldr.training_likeness(images, labels, train_x, train_y, held_x, held_y)
    if held_x is None:
        log(f"training-likeness: nearest SSIM train {likeness['ssim_train']:.3f}, one-to-one matches at "
            f"SSIM>=0.4: train {likeness['matched_train_040']} (no held-out set)")
    else:
        log(f"training-likeness: nearest SSIM train {likeness['ssim_train']:.3f} / held-out "
            f"{likeness['ssim_heldout']:.3f}, win rate {likeness['win_rate']:.2f}, one-to-one matches at "
            f"SSIM>=0.4: train {likeness['matched_train_040']} / held-out {likeness['matched_heldout_040']}")
    save_nearest(images, labels, gen_ids, kept, train_x, held_x, likeness,
                 os.path.join(run_dir, "nearest.png"))
    diversity = tldr.within_class_ssim(images, labels)
    log(f"diversity: mean SSIM between images of one class {diversity:.3f} (real training images: about 0.2)")
    premises = tldr.premises(classifier, images, labels)
    log(f"premises on the generated images: confidence {premises['confidence']:.4f}, "
        f"input-grad norm {premises['input_grad_norm']:.4g}, weight-grad norm {premises['weight_grad_norm']:.4g}")

    # Of training-likeness the numbers, not the index tensors; the held-out ones are null without a held-out set.
    numbers = ("ssim_train", "ssim_heldout", "win_rate", "matched_train_040", "matched_heldout_040")
    metrics = {"accuracy": acc, "confidence": conf, "classifier_test_accuracy": clf_ckpt["test_accuracy"],
               "final_terms": terms, "samples_ortho": ortho, "screen_ortho": screen_ortho, "kept": kept,
               "training_likeness": {key: likeness[key] for key in numbers},
               "within_class_ssim": diversity, "premises": premises}
    tldr.save_json(metrics, os.path.join(run_dir, "metrics.json"))
    log(f"wrote {run_dir}/samples.pt, grid.png, nearest.png, metrics.json")
    return run_dir


def main(reconstruct=False, doc=__doc__):
    run(parse_args(reconstruct=reconstruct, doc=doc))


if __name__ == "__main__":
    tldr.run_script(main)
