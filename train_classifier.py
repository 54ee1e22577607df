"""Train the CNN classifier of the paper's section 3.1 on a seeded training subset.

    python train_classifier.py --dataset fmnist --subset 10000

Writes <out-dir>/classifier-<dataset>-<subset>-seed<seed>/ with classifier.pt (model,
config, dataset, seed, subset_indices, test_accuracy), metrics.json and args.json.
After training it prints the paper's premises (mean confidence, input- and
weight-gradient norms) on the training subset, a held-out set of the same train split
and the test split, and saves them in metrics.json.
"""
import argparse
import os

import torch

import tldr


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=tldr.HelpFormatter)
    tldr.add_common_flags(p)
    p.add_argument("--epochs", type=int, default=20, help="passes over the training subset")
    p.add_argument("--batch-size", type=int, default=128, help="training images per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay (the paper trains with it)")
    p.add_argument("--blocks", type=int, default=2,
                   help="conv blocks ((conv, batch norm, leaky ReLU) x --convs, max pool, dropout), each halving "
                        "the image side")
    p.add_argument("--convs", type=int, default=1, help="conv layers in each block (2 or 3 with --blocks 3: VGG-style)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block (each next one has twice)")
    p.add_argument("--hidden", type=int, default=128, help="size of the hidden fully connected layer (the features)")
    p.add_argument("--dropout", type=float, default=0.25, help="dropout after each conv block and the hidden layer")
    p.add_argument("--premises-images", type=int, default=1000,
                   help="measure the premises (confidence, input- and weight-gradient norms) on at most this "
                        "many images of each set (training subset, held-out, test), drawn by --seed")
    p.add_argument("--run-dir", default=None, help="None: <out-dir>/classifier-<dataset>-<subset>-seed<seed>")
    args = p.parse_args(argv)
    if args.premises_images < 1:
        p.error("--premises-images must be at least 1")
    side = tldr.DATASETS[args.dataset][2]
    if not 1 <= args.blocks <= side.bit_length() - 1:  # each block halves the side, which must stay >= 1
        p.error(f"--blocks must be from 1 to {side.bit_length() - 1} for {side}x{side} images")
    if args.convs < 1:
        p.error("--convs must be at least 1")
    return args


def run(args, log=print):
    """Train and save the classifier; returns the path of classifier.pt."""
    tldr.check_subset(args)
    device = tldr.pick_device(args.device)
    run_dir = args.run_dir or tldr.classifier_dir(args.out_dir, args.dataset, args.subset, args.seed)
    path = os.path.join(run_dir, "classifier.pt")
    if tldr.prepare_run_dir(run_dir, "metrics.json", args):
        log(f"{path} is already trained; nothing to resume")
        return path
    tldr.seed_everything(args.seed)

    split_images, split_labels = tldr.load_split(args.dataset, args.data_root, train=True)
    idx = tldr.draw_subset(len(split_images), args.subset, args.seed)
    images, labels = split_images[idx], split_labels[idx]  # the classifier sees these images only
    _, channels, size, _ = tldr.DATASETS[args.dataset]
    model = tldr.Classifier(channels=channels, image_size=size, width=args.width, hidden=args.hidden,
                            dropout=args.dropout, blocks=args.blocks, convs=args.convs,
                            mean=images.mean((0, 2, 3)).tolist(), std=images.std((0, 2, 3)).tolist()).to(device)
    meta = {"kind": "classifier", "config": model.config, "dataset": args.dataset, "seed": args.seed,
            "subset_indices": idx, "epochs": args.epochs, "test_accuracy": None}

    state = None
    if args.resume and os.path.exists(path):
        ckpt = tldr.load_checkpoint(path, "classifier")
        check_same(ckpt, meta, path)
        state = ckpt
        log(f"resuming {path} after epoch {ckpt['epoch']}")
    log(f"training a classifier on {len(idx)} {args.dataset} images on {device}")
    state = tldr.train_classifier(model, images, labels, epochs=args.epochs, batch_size=args.batch_size,
                                  lr=args.lr, weight_decay=args.weight_decay, device=device, state=state,
                                  save=lambda s: tldr.save_pt(meta | s, path))

    test_images, test_labels = tldr.load_split(args.dataset, args.data_root, train=False)
    acc, conf = tldr.evaluate(model, test_images, test_labels, device)
    train_acc, train_conf = tldr.evaluate(model, images, labels, device)
    tldr.save_pt(meta | state | {"test_accuracy": acc}, path)
    log(f"test accuracy {acc:.4f} (train {train_acc:.4f}); saved {path}")

    sets = {"train": (images, labels), "heldout": None, "test": (test_images, test_labels)}
    try:
        held = tldr.heldout_indices(split_labels, idx, args.seed)
        sets["heldout"] = split_images[held], split_labels[held]
    except tldr.TLDRError as e:  # e.g. the subset is the whole split
        log(f"premises on the training subset and the test split only: {e}")
    premises = {name: None if pair is None else premises_on(model, *pair, args.premises_images, args.seed)
                for name, pair in sets.items()}
    log("premises, means over n images of each set:")
    log(f"{'set':<8}{'n':>6}{'confidence':>12}{'input-grad norm':>17}{'weight-grad norm':>18}")
    for name, p in premises.items():
        if p is None:
            log(f"{name:<8}{'-':>6}  (no held-out set)")
        else:
            log(f"{name:<8}{p['n']:>6}{p['confidence']:>12.4f}{p['input_grad_norm']:>17.4g}{p['weight_grad_norm']:>18.4g}")

    metrics = {"test_accuracy": acc, "test_confidence": conf, "train_accuracy": train_acc,
               "train_confidence": train_conf, "subset": len(idx), "premises": premises}
    tldr.save_json(metrics, os.path.join(run_dir, "metrics.json"))
    return path


def premises_on(model, images, labels, n, seed):
    """tldr.premises on at most n of (images, labels), and how many that was.

    Choice: the first n of a permutation drawn from its own torch.Generator seeded with
    --seed, so the same images every run; n bounds the time, which the per-image weight
    gradients dominate.
    """
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
    return {"n": len(pick)} | tldr.premises(model, images[pick], labels[pick])


def check_same(ckpt, meta, path):
    """A run resumed from `path` must have been started with the same settings."""
    ckpt = ckpt | {"config": {"blocks": 2, "convs": 1} | ckpt["config"]}  # saved before these flags existed
    for key in ("dataset", "config", "epochs"):
        if ckpt[key] != meta[key]:
            raise tldr.TLDRError(f"{path}: was started with {key}={ckpt[key]}, not {meta[key]}; use --overwrite")
    if not torch.equal(ckpt["subset_indices"], meta["subset_indices"]):
        raise tldr.TLDRError(f"{path}: was trained on another subset; use --overwrite")


def main():
    run(parse_args())


if __name__ == "__main__":
    tldr.run_script(main)
