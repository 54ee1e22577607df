"""Each script end to end, run as a user runs it (a subprocess), on tiny datasets in the
real formats; the checks are on what the scripts wrote and said. Runs that must fail
early run in this process, as __main__ all the same, to save the start-up time."""
import json
import math
import os
import re

import pytest
import torch
from PIL import Image

import tldr
from conftest import N_TEST, N_TRAIN, one_line_error, run_in_process, run_script

# Small enough that the rest of the fake train split (200 images, 20 of each class) holds
# a held-out set with the subset's class counts, for seed 1 on every dataset.
SUBSET = 60
TINY_CLASSIFIER = ["--epochs", 3, "--batch-size", 32, "--width", 8, "--hidden", 32]
TINY_GENERATORS = ["--steps", 3, "--generators", 2, "--batch-size", 8, "--width", 8, "--latent-dim", 8,
                   "--log-every", 1]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def classifier(data_root, out_dir):
    """classifier(dataset, seed=1) -> path of a tiny classifier.pt, trained once per module."""
    done = {}

    def get(dataset, seed=1):
        if (dataset, seed) not in done:
            deeper = ["--blocks", 3, "--convs", 2] if dataset == "svhn" else []  # one with the deeper classifier
            p = run_script("train_classifier.py", "--dataset", dataset, "--subset", SUBSET, "--seed", seed,
                           "--data-root", data_root, "--out-dir", out_dir, *TINY_CLASSIFIER, *deeper)
            assert p.returncode == 0, p.stderr
            done[dataset, seed] = os.path.join(tldr.classifier_dir(out_dir, dataset, SUBSET, seed), "classifier.pt")
        return done[dataset, seed]
    return get


def load(path):
    return torch.load(path, weights_only=True)


def check_premises(p):
    assert 0 <= p["confidence"] <= 1
    assert all(math.isfinite(p[k]) and p[k] >= 0 for k in ("input_grad_norm", "weight_grad_norm"))


@pytest.mark.parametrize("dataset", ["mnist", "fmnist", "svhn", "cifar10"])
def test_train_classifier(dataset, classifier):
    path = classifier(dataset)
    ckpt = load(path)
    assert {"model", "config", "dataset", "seed", "subset_indices", "test_accuracy"} <= ckpt.keys()
    assert ckpt["kind"] == "classifier" and ckpt["dataset"] == dataset and ckpt["seed"] == 1
    assert ckpt["epoch"] == ckpt["epochs"] == 3
    _, channels, size, _ = tldr.DATASETS[dataset]
    assert (ckpt["config"]["channels"], ckpt["config"]["image_size"]) == (channels, size)
    assert (ckpt["config"]["blocks"], ckpt["config"]["convs"]) == ((3, 2) if dataset == "svhn" else (2, 1))
    idx = ckpt["subset_indices"]
    assert idx.dtype == torch.long and idx.shape == (SUBSET,)
    assert 0 <= idx.min() and idx.max() < N_TRAIN and len(idx.unique()) == SUBSET
    # The fake classes are easy: well above chance (0.1) after 3 epochs on 60 images, for
    # two blocks; the deeper classifier (six batch norms on 60 images) is not there yet.
    assert (0.5 if dataset != "svhn" else 0) < ckpt["test_accuracy"] <= 1
    folder = os.path.dirname(path)
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert metrics["test_accuracy"] == ckpt["test_accuracy"] and metrics["subset"] == SUBSET
    premises = metrics["premises"]
    assert {name: p["n"] for name, p in premises.items()} == {"train": SUBSET, "heldout": SUBSET, "test": N_TEST}
    for p in premises.values():
        check_premises(p)
    assert json.load(open(os.path.join(folder, "args.json")))["dataset"] == dataset
    model = tldr.Classifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])  # the file alone rebuilds the model
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == (6 if dataset == "svhn" else 2)


def test_subset_depends_on_the_seed_alone(classifier):
    seed1, seed2 = load(classifier("mnist", 1))["subset_indices"], load(classifier("mnist", 2))["subset_indices"]
    assert not torch.equal(seed1, seed2)
    assert torch.equal(seed1, load(classifier("fmnist", 1))["subset_indices"])  # same seed, same split size
    assert torch.equal(seed1, tldr.draw_subset(N_TRAIN, SUBSET, 1))


def check_run(run_dir, *, dataset, generators, per_class, reconstruct, heldout=True, trained=None):
    """What a finished invert/reconstruct run folder must hold: `generators` kept of
    `trained` (default: all kept)."""
    trained = trained or generators
    _, channels, size, _ = tldr.DATASETS[dataset]
    samples = load(os.path.join(run_dir, "samples.pt"))
    k = tldr.NUM_CLASSES * per_class * generators
    images, labels, gen = samples["images"], samples["labels"], samples["generator"]
    assert images.dtype == torch.float32 and images.shape == (k, channels, size, size)
    assert 0 <= images.min() and images.max() <= 1
    assert labels.dtype == gen.dtype == torch.long and labels.shape == gen.shape == (k,)
    assert labels.bincount().tolist() == [per_class * generators] * tldr.NUM_CLASSES
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    kept, screen = metrics["kept"], metrics["screen_ortho"]  # screen: L_Ortho of each one's samples when ranked
    assert (screen is None) == (json.load(open(os.path.join(run_dir, "args.json")))["keep"] is None)  # with --keep
    ranked = screen or metrics["samples_ortho"]
    assert len(ranked) == trained and all(0 <= o <= 1 for o in ranked)
    assert kept == sorted(sorted(range(trained), key=lambda k: ranked[k])[:generators])  # the lowest, in order
    # samples_ortho: L_Ortho over each kept generator's final samples (null for the others)
    assert [o is not None and 0 <= o <= 1 for o in metrics["samples_ortho"]] == [k in kept for k in range(trained)]
    assert gen.unique().tolist() == kept
    assert [(gen == k).sum().item() for k in metrics["kept"]] == [tldr.NUM_CLASSES * per_class] * generators

    # grid.png: a row per class; per generator min(4, per_class) columns; + a training image
    columns = generators * min(4, per_class) + reconstruct
    assert Image.open(os.path.join(run_dir, "grid.png")).size == (columns * (size + 2) + 2, 10 * (size + 2) + 2)
    # nearest.png: a row per class; per generator a (generated, nearest train, nearest held-out) triple
    nearest = Image.open(os.path.join(run_dir, "nearest.png")).convert("L")
    assert nearest.size == (3 * generators * (size + 2) + 2, 10 * (size + 2) + 2)
    left = 2 * (size + 2) + 2  # the held-out image of row 0, triple 0: blank (all 0) without a held-out set
    assert (nearest.crop((left, 2, left + size, 2 + size)).getextrema()[1] == 0) == (not heldout)

    screen_steps = json.load(open(os.path.join(run_dir, "args.json")))["screen_steps"]
    for i in range(trained):
        ckpt = tldr.load_checkpoint(os.path.join(run_dir, f"generator{i}.pt"), "generator")
        # the generators not kept stopped after the screening's steps
        assert ckpt["step"] == (3 if i in kept else min(screen_steps, 3)) and ckpt["steps"] == 3
        assert ckpt["index"] == i and ckpt["reconstruct"] == reconstruct
        tldr.Generator(**ckpt["config"]).load_state_dict(ckpt["model"])
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["confidence"] <= 1
    n_terms = 10 if reconstruct else 4
    assert [t and len(t) for t in metrics["final_terms"]] == [n_terms if k in kept else None for k in range(trained)]
    check_premises(metrics["premises"])
    assert -1 <= metrics["within_class_ssim"] <= 1
    likeness = metrics["training_likeness"]
    assert -1 <= likeness["ssim_train"] <= 1 and 0 <= likeness["matched_train_040"] <= len(images)
    if heldout:
        assert -1 <= likeness["ssim_heldout"] <= 1 and 0 <= likeness["win_rate"] <= 1
        assert 0 <= likeness["matched_heldout_040"] <= len(images)
    else:
        assert likeness["ssim_heldout"] is likeness["win_rate"] is likeness["matched_heldout_040"] is None
    assert json.load(open(os.path.join(run_dir, "args.json")))["reconstruct"] == reconstruct
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]


def test_invert_trains_the_default_classifier_first(data_root, out_dir):
    # No --subset: the whole train split, so neither script has a held-out set; both say so and go on.
    p = run_script("invert.py", "--dataset", "mnist", "--data-root", data_root,
                   "--out-dir", os.path.join(out_dir, "fresh"), *TINY_GENERATORS, "--samples-per-class", 2)
    assert p.returncode == 0, p.stderr
    assert "no trained classifier" in p.stdout and "training one first" in p.stdout
    assert "premises on the training subset and the test split only: no held-out set" in p.stdout
    assert "training-likeness against the training subset only: no held-out set" in p.stdout
    assert "Traceback" not in p.stderr
    clf_dir = tldr.classifier_dir(os.path.join(out_dir, "fresh"), "mnist", None, 1)
    assert torch.equal(load(os.path.join(clf_dir, "classifier.pt"))["subset_indices"], torch.arange(N_TRAIN))
    premises = json.load(open(os.path.join(clf_dir, "metrics.json")))["premises"]
    assert premises["heldout"] is None and premises["train"]["n"] == N_TRAIN
    run_dir = os.path.join(out_dir, "fresh", "invert-mnist-full-vector-matrix-seed1")
    check_run(run_dir, dataset="mnist", generators=2, per_class=2, reconstruct=False, heldout=False)
    assert "(no held-out set)" in p.stdout and "premises on the generated images: confidence " in p.stdout


@pytest.mark.parametrize("dataset,extra", [("mnist", ["--fast-grad-norm", "--conditioning", "label",
                                                      "--generators", 3, "--keep", 2, "--screen-steps", 2]),
                                           ("cifar10", ["--conditioning", "matrix", "--soft-vectors",
                                                        "--output", "linear", "--shift", "1", "--flip", "3", "1", "3"])])
def test_reconstruct(dataset, extra, data_root, out_dir, classifier):
    run_dir = os.path.join(out_dir, f"reconstruct-{dataset}")
    p = run_script("reconstruct.py", "--dataset", dataset, "--subset", SUBSET, "--data-root", data_root,
                   "--classifier", classifier(dataset), "--run-dir", run_dir, *TINY_GENERATORS,
                   "--samples-per-class", 4, *extra)
    assert p.returncode == 0, p.stderr
    assert re.search(r"generator \d: step 3/3 \| kl ", p.stdout) and " grad " in p.stdout
    assert "training-likeness: nearest SSIM train " in p.stdout and " win rate " in p.stdout
    check_run(run_dir, dataset=dataset, generators=2, per_class=4, reconstruct=True,
              trained=3 if "--keep" in extra else 2)
    assert ("; keeping generator(s) " in p.stdout) == ("--keep" in extra)
    # metrics.json's samples_ortho of a kept generator is L_Ortho of its images in samples.pt
    samples, metrics = load(os.path.join(run_dir, "samples.pt")), json.load(open(os.path.join(run_dir, "metrics.json")))
    ckpt = tldr.load_checkpoint(classifier(dataset), "classifier")
    model = tldr.Classifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    for k in metrics["kept"]:
        assert tldr.samples_ortho(model, samples["images"][samples["generator"] == k]) == pytest.approx(
            metrics["samples_ortho"][k], rel=1e-5)
    ckpt = tldr.load_checkpoint(os.path.join(run_dir, "generator0.pt"), "generator")
    assert ckpt["hot"] == ("--soft-vectors" not in extra)
    assert ckpt["config"]["output"] == ("linear" if "linear" in extra else "sigmoid")
    assert (ckpt["shift"], ckpt["flip"]) == ((1, [1, 3]) if "--flip" in extra else (0, []))  # sorted, once each


def test_keep_trains_the_kept_generators_on_as_if_never_screened(data_root, classifier, tmp_path):
    """--keep 1 --screen-steps 1: every generator 1 step, then the kept one on from its
    checkpoint to step 3, ending as it ends trained straight through; --resume keeps the
    same one (screen.pt) and refuses other screening flags."""
    # in this process (test_reconstruct runs --keep as a user does), to save the start-up time
    common = ["reconstruct.py", "--dataset", "mnist", "--subset", SUBSET, "--data-root", data_root,
              "--classifier", classifier("mnist"), *TINY_GENERATORS, "--samples-per-class", 2]
    screened, straight = str(tmp_path / "screened"), str(tmp_path / "straight")
    p = run_in_process(*common, "--keep", 1, "--screen-steps", 1, "--run-dir", screened)
    assert p.returncode == 0, p.stderr
    assert run_in_process(*common, "--run-dir", straight).returncode == 0
    (k,) = json.load(open(os.path.join(screened, "metrics.json")))["kept"]
    # each generator stopped at step 1, then only generator k went on: steps 2 and 3, not 1 again
    assert [f"generator {i}: step 1/1 " in p.stdout for i in range(2)] == [True] * 2
    assert f"generator {k}: resuming at step 1/3" in p.stdout and f"generator {k}: step 1/3 " not in p.stdout
    assert f"generator {k}: step 3/3 " in p.stdout and p.stdout.count("step 3/3 ") == 1
    a, b = (load(os.path.join(d, f"generator{k}.pt")) for d in (screened, straight))
    assert a["step"] == b["step"] == 3 and all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
    samples, straight_samples = (load(os.path.join(d, "samples.pt")) for d in (screened, straight))
    assert torch.equal(samples["images"], straight_samples["images"][straight_samples["generator"] == k])
    # the dropped generator's screen_ortho is L_Ortho of its samples at its step-1 checkpoint
    dropped = tldr.load_checkpoint(os.path.join(screened, f"generator{1 - k}.pt"), "generator")
    gen = tldr.Generator(**dropped["config"])
    gen.load_state_dict(dropped["model"])
    ckpt = load(classifier("mnist"))
    model = tldr.Classifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    tldr.set_rng_state(dropped["rng"])  # sampled right after training, as screen() samples
    x, _ = tldr.sample(gen, 2, True, "cpu", model.eval(), draws=3)
    screen_ortho = json.load(open(os.path.join(screened, "metrics.json")))["screen_ortho"]
    assert dropped["step"] == 1 and tldr.samples_ortho(model, x) == pytest.approx(screen_ortho[1 - k], rel=1e-5)

    os.remove(os.path.join(screened, "metrics.json"))  # as if stopped in the evaluation
    again = run_in_process(*common, "--keep", 1, "--screen-steps", 1, "--run-dir", screened, "--resume")
    assert again.returncode == 0, again.stderr
    assert f"screened before, as {os.path.join(screened, 'screen.pt')} records: keeping generator(s) {k}" in again.stdout
    assert "step 1/1 " not in again.stdout and torch.equal(load(os.path.join(screened, "samples.pt"))["images"],
                                                        samples["images"])
    os.remove(os.path.join(screened, "metrics.json"))
    p = run_in_process(*common, "--keep", 2, "--screen-steps", 1, "--run-dir", screened, "--resume")
    one_line_error(p, "screen.pt", "was screened with --keep 1, not 2", "--overwrite")
    p = run_in_process(*common, "--run-dir", screened, "--resume")  # without --keep: not the dropped ones too
    one_line_error(p, screened, "was started with --keep", "--overwrite")
    os.remove(os.path.join(screened, "screen.pt"))  # as a run without --keep, resumed with it
    p = run_in_process(*common, "--keep", 1, "--screen-steps", 1, "--run-dir", screened, "--resume")
    one_line_error(p, f"generator{k}.pt", "past step 1", "--overwrite")


@pytest.mark.parametrize("output", ["sigmoid", "linear"])
def test_try_negatives_turns_each_generator_into_its_negative(output, data_root, classifier, tmp_path, monkeypatch):
    """--try-negatives --screen-steps 1: generator 2 + k starts as generator k at step 1,
    drawing 1 - x; both train 1 step more, and of each pair the one whose samples' mean
    pixel is nearer the classifier's is ranked by L_Ortho."""
    first = {}  # the first state saved under each file name
    save_pt = tldr.save_pt

    def save_and_keep(obj, path):
        save_pt(obj, path)
        first.setdefault(os.path.basename(path), load(path))
    monkeypatch.setattr(tldr, "save_pt", save_and_keep)
    run_dir = str(tmp_path / "run")
    args = ["reconstruct.py", "--dataset", "mnist", "--subset", SUBSET, "--data-root", data_root, "--classifier",
            classifier("mnist"), *TINY_GENERATORS, "--samples-per-class", 2, "--output", output, "--keep", 1,
            "--screen-steps", 1, "--try-negatives", "--run-dir", run_dir]
    p = run_in_process(*args)
    assert p.returncode == 0, p.stderr
    for k in range(2):
        a, b = first[f"generator{k}.pt"], first[f"generator{2 + k}.pt"]
        assert a["step"] == b["step"] == 1 and (a["index"], b["index"]) == (k, 2 + k)
        assert f"generator {k}: copied at step 1 as its negative, generator {2 + k}" in p.stdout
        gens = []
        for state in (a, b):
            gens.append(tldr.Generator(**state["config"]))
            gens[-1].load_state_dict(state["model"])
        labels = torch.arange(10).repeat(2)
        z, (prob, matrix) = torch.randn(20, 8), tldr.sample_conditioning(labels, True)
        x, negative = (g.eval()(z, labels, prob, matrix) for g in gens)
        assert (x - 0.5).abs().max() > 1e-3 and torch.allclose(negative, 1 - x, atol=1e-6)
        # Adam's running mean of the gradient turns with the last layer; the rest is as it was
        for i, (name, _) in enumerate(gens[0].named_parameters()):
            adam_a, adam_b = a["optimizer"]["state"][i], b["optimizer"]["state"][i]
            assert torch.equal(adam_b["exp_avg"], -adam_a["exp_avg"] if name.startswith("to_image.3.")
                               else adam_a["exp_avg"])
            assert torch.equal(adam_b["exp_avg_sq"], adam_a["exp_avg_sq"])
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the same draws from here on
    # the ranking: one of each pair by mean pixel, then the lowest L_Ortho
    screen, metrics = load(os.path.join(run_dir, "screen.pt")), json.load(open(os.path.join(run_dir, "metrics.json")))
    gap, ortho = screen["mean_gap"], screen["ortho"]
    ranked = [k if gap[k] <= gap[2 + k] else 2 + k for k in range(2)]
    assert metrics["kept"] == [min(ranked, key=lambda k: ortho[k])] and metrics["screen_ortho"] == ortho
    ckpt = load(classifier("mnist"))
    model = tldr.Classifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    for j in set(range(4)) - set(metrics["kept"]):  # each at step 2, where it was ranked
        state = tldr.load_checkpoint(os.path.join(run_dir, f"generator{j}.pt"), "generator")
        gen = tldr.Generator(**state["config"])
        gen.load_state_dict(state["model"])
        tldr.set_rng_state(state["rng"])  # sampled right after training, as screen() samples
        x, _ = tldr.sample(gen, 2, True, "cpu", model.eval(), draws=3)
        assert state["step"] == 2 and tldr.samples_ortho(model, x) == pytest.approx(ortho[j], rel=1e-5)
        assert abs(x.mean().item() - model.mean.item()) == pytest.approx(gap[j], rel=1e-5)

    os.remove(os.path.join(run_dir, "metrics.json"))  # as if stopped in the evaluation
    p = run_in_process(*args, "--resume")
    assert p.returncode == 0 and f"records: keeping generator(s) {metrics['kept'][0]}" in p.stdout, p.stderr
    assert "copied" not in p.stdout and "step 2/3 " not in p.stdout
    for name in ("screen.pt", "metrics.json"):  # as if stopped right after the copies: each at step 1
        os.remove(os.path.join(run_dir, name))
    for k in range(4):
        torch.save(first[f"generator{k}.pt"], os.path.join(run_dir, f"generator{k}.pt"))
    p = run_in_process(*args, "--resume")
    assert p.returncode == 0 and "copied" not in p.stdout, p.stderr
    assert all(f"generator {k}: resuming at step 1/3" in p.stdout for k in range(4))
    assert load(os.path.join(run_dir, "screen.pt"))["ortho"] == ortho  # ranked as if never stopped
    os.remove(os.path.join(run_dir, "metrics.json"))
    one_line_error(run_in_process(*args[:-3], "--run-dir", run_dir, "--resume"), "screen.pt",
                   "was screened with --try-negatives True, not False", "--overwrite")


@pytest.mark.parametrize("script,args,needles", [
    ("train_classifier.py", ["--dataset", "imagenet"], ["--dataset", "imagenet", "mnist"]),
    ("reconstruct.py", ["--conditioning", "onehot"], ["--conditioning", "onehot", "vector-matrix"]),
    ("train_classifier.py", ["--subset", 0], ["--subset", "60000", "got 0"]),
    ("invert.py", ["--subset", -5], ["--subset", "60000", "got -5"]),
    ("train_classifier.py", ["--subset", 60001], ["--subset", "60000", "got 60001"]),
    ("invert.py", ["--steps", 0], ["--steps"]),
    ("reconstruct.py", ["--flip", 2, 10], ["--flip", "0 to 9"]),
    ("invert.py", ["--shift", -1], ["--shift", "0 or more"]),
    ("reconstruct.py", ["--generators", 2, "--keep", 3], ["--keep", "from 1 to --generators (2)", "got 3"]),
    ("invert.py", ["--keep", 0], ["--keep", "got 0"]),
    ("reconstruct.py", ["--keep", 1, "--screen-steps", 0], ["--screen-steps", "at least 1"]),
    ("reconstruct.py", ["--try-negatives"], ["--try-negatives", "--keep"]),
    ("invert.py", ["--keep", 1, "--steps", 150, "--try-negatives"], ["--try-negatives", "twice --screen-steps"]),
    ("train_classifier.py", ["--premises-images", 0], ["--premises-images"]),
    ("train_classifier.py", ["--blocks", 5], ["--blocks", "1 to 4", "28x28"]),
    ("train_classifier.py", ["--dataset", "cifar10", "--blocks", 0], ["--blocks", "1 to 5", "32x32"]),
    ("train_classifier.py", ["--convs", 0], ["--convs", "at least 1"]),
    ("train_classifier.py", ["--resume", "--overwrite"], ["--resume", "--overwrite"]),
])
def test_bad_arguments(script, args, needles, tmp_path):
    one_line_error(run_in_process(script, "--out-dir", tmp_path, *args), *needles)
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize("script", ["train_classifier.py", "invert.py", "reconstruct.py"])
def test_help_shows_every_default(script):
    result = run_in_process(script, "--help")
    assert result.returncode == 0
    listing = re.split(r"(?:options|optional arguments):", result.stdout)[1]  # "optional arguments:" before Python 3.10
    options = [o for o in re.split(r"\n  (?=-)", listing) if o.startswith("--")]
    assert len(options) > 10
    assert [o.split()[0] for o in options if o.count("(default:") != 1] == []  # each once, none twice


def test_missing_data_without_internet(tmp_path):
    root = str(tmp_path / "no-data")
    p = run_in_process("train_classifier.py", "--data-root", root, "--out-dir", tmp_path / "runs")
    one_line_error(p, root, "--data-root")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device(tmp_path):
    one_line_error(run_in_process("train_classifier.py", "--device", "cuda", "--out-dir", tmp_path), "cuda")


def test_classifier_for_another_dataset(data_root, tmp_path, classifier):
    path = classifier("mnist")
    p = run_script("invert.py", "--dataset", "fmnist", "--classifier", path, "--data-root", data_root,
                   "--out-dir", tmp_path, *TINY_GENERATORS)
    one_line_error(p, path, "mnist", "fmnist")
    assert not os.listdir(tmp_path)


def test_classifier_for_another_image_size(data_root, tmp_path, classifier):
    ckpt = load(classifier("mnist"))
    ckpt["config"]["image_size"] = 32
    path = str(tmp_path / "classifier32.pt")
    torch.save(ckpt, path)
    p = run_in_process("invert.py", "--classifier", path, "--data-root", data_root, "--out-dir", tmp_path / "runs",
                   *TINY_GENERATORS)
    one_line_error(p, path, "1x32", "1x28")


def test_non_finite_loss_keeps_the_last_good_checkpoint(data_root, tmp_path, classifier):
    run_dir = str(tmp_path / "run")
    p = run_script("invert.py", "--classifier", classifier("mnist"), "--data-root", data_root, "--run-dir", run_dir,
                   *TINY_GENERATORS, "--checkpoint-every", 1, "--lr", 1e30)
    one_line_error(p, "generator 0: loss term '", "non-finite at step 2", "checkpoint is kept")
    ckpt = tldr.load_checkpoint(os.path.join(run_dir, "generator0.pt"), "generator")
    assert ckpt["step"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
