"""Train the CNN classifier of the paper's section 3.1 on a seeded training subset.

    python train_classifier.py --dataset fmnist --subset 10000

Writes <out-dir>/classifier-<dataset>-<subset>-seed<seed>/ with classifier.pt (model,
config, dataset, seed, subset_indices, test_accuracy), metrics.json and args.json.
"""
import argparse
import os

import torch

import tldr


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=tldr.HelpFormatter)
    tldr.add_common_flags(p)
    p.add_argument("--epochs", type=int, default=20, help="passes over the training subset")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay (the paper trains with it)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block (the second has twice)")
    p.add_argument("--hidden", type=int, default=128, help="size of the hidden fully connected layer (the features)")
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--run-dir", default=None, help="default: <out-dir>/classifier-<dataset>-<subset>-seed<seed>")
    return p.parse_args(argv)


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

    images, labels = tldr.load_split(args.dataset, args.data_root, train=True)
    idx = tldr.draw_subset(len(images), args.subset, args.seed)
    images, labels = images[idx], labels[idx]  # the classifier sees these images only
    _, channels, size, _ = tldr.DATASETS[args.dataset]
    model = tldr.Classifier(channels=channels, image_size=size, width=args.width, hidden=args.hidden,
                            dropout=args.dropout, mean=images.mean((0, 2, 3)).tolist(),
                            std=images.std((0, 2, 3)).tolist()).to(device)
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
    metrics = {"test_accuracy": acc, "test_confidence": conf, "train_accuracy": train_acc,
               "train_confidence": train_conf, "subset": len(idx)}
    tldr.save_json(metrics, os.path.join(run_dir, "metrics.json"))
    log(f"test accuracy {acc:.4f} (train {train_acc:.4f}); saved {path}")
    return path


def check_same(ckpt, meta, path):
    """A run resumed from `path` must have been started with the same settings."""
    for key in ("dataset", "config", "epochs"):
        if ckpt[key] != meta[key]:
            raise tldr.TLDRError(f"{path}: was started with {key}={ckpt[key]}, not {meta[key]}; use --overwrite")
    if not torch.equal(ckpt["subset_indices"], meta["subset_indices"]):
        raise tldr.TLDRError(f"{path}: was trained on another subset; use --overwrite")


def main():
    run(parse_args())


if __name__ == "__main__":
    tldr.run_script(main)
