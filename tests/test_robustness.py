"""Robustness: interrupted runs resume bit for bit, untrusted or wrong checkpoints are
refused in one line without touching earlier files, finished runs are not overwritten
by accident, and a non-finite loss stops a run with its last good checkpoint kept."""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess

import pytest
import torch

import tldr
from conftest import REPO, one_line_error, run_in_process, run_script, script_command, script_env

SUBSET = 100
CLASSIFIER = ["--dataset", "mnist", "--subset", SUBSET, "--epochs", 15, "--batch-size", 32, "--width", 8,
              "--hidden", 32]
# 2 generators x 40 steps, a checkpoint every 5: long enough to be stopped in the middle
GENERATORS = ["--dataset", "mnist", "--subset", SUBSET, "--steps", 40, "--checkpoint-every", 5, "--generators", 2,
              "--batch-size", 8, "--width", 8, "--latent-dim", 8, "--samples-per-class", 2, "--log-every", 1,
              "--fast-grad-norm"]


def hashes(folder):
    """sha256 of every file under `folder` (hidden ones too), by relative path."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def no_temp_files(folder):
    return not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def run_until(script, args, marker, sig):
    """Start a script, send `sig` once a line of its output contains `marker`, wait for it.
    Returns the CompletedProcess."""
    proc = subprocess.Popen(script_command(script, *args), cwd=REPO, env=script_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    assert marker in "".join(seen), f"the run ended before '{marker}':\n{''.join(seen)}{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


def ok(p):
    assert p.returncode == 0, p.stderr
    return p


def assert_identical(a, b, where="checkpoint"):
    """Bit-for-bit the same: every tensor torch.equal, everything else ==, recursively."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def load(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    """An uninterrupted classifier run and an uninterrupted reconstruct run with it."""
    out = tmp_path_factory.mktemp("reference")
    clf_dir = str(out / "classifier")
    ok(run_script("train_classifier.py", *CLASSIFIER, "--data-root", data_root, "--run-dir", clf_dir))
    classifier = os.path.join(clf_dir, "classifier.pt")
    rec_dir = str(out / "reconstruct")
    ok(run_script("reconstruct.py", *GENERATORS, "--classifier", classifier, "--data-root", data_root,
                  "--run-dir", rec_dir))
    assert no_temp_files(clf_dir) and no_temp_files(rec_dir)
    return {"classifier": classifier, "classifier_dir": clf_dir, "reconstruct_dir": rec_dir}


@pytest.mark.parametrize("sig,marker", [(signal.SIGINT, "generator 1: step 10/40"),
                                        (signal.SIGKILL, "generator 0: step 12/40")])
def test_interrupted_reconstruct_resumes_bit_for_bit(sig, marker, runs, data_root, tmp_path):
    run_dir = str(tmp_path / "run")
    args = [*GENERATORS, "--classifier", runs["classifier"], "--data-root", data_root, "--run-dir", run_dir]
    p = run_until("reconstruct.py", args, marker, sig)
    if sig == signal.SIGINT:  # a clean stop at a step boundary, after saving
        assert p.returncode == 130 and "--resume" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert no_temp_files(run_dir)
        stopped = tldr.load_checkpoint(os.path.join(run_dir, "generator1.pt"), "generator")["step"]
        assert 10 <= stopped < 40
    else:
        assert p.returncode == -signal.SIGKILL
        refused = run_script("reconstruct.py", *args)  # a stopped run is not restarted by accident
        assert refused.returncode == 1 and "--resume" in refused.stderr
        # a kill during a save leaves atomic_write's temporary file; --resume clears it
        open(os.path.join(run_dir, f".generator1.pt.{os.getpid()}.tmp"), "wb").close()
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))

    resumed = ok(run_script("reconstruct.py", *args, "--resume"))
    assert "resuming at step" in resumed.stdout
    assert no_temp_files(run_dir)
    reference = runs["reconstruct_dir"]
    # weights, optimizer state, RNG state, last loss terms; then the samples and metrics
    for name in ("generator0.pt", "generator1.pt", "samples.pt"):
        assert_identical(load(os.path.join(reference, name)), load(os.path.join(run_dir, name)), name)
    a, b = (json.load(open(os.path.join(d, "metrics.json"))) for d in (reference, run_dir))
    assert a == b


def test_interrupted_classifier_resumes_bit_for_bit(runs, data_root, tmp_path):
    run_dir = str(tmp_path / "classifier")
    args = [*CLASSIFIER, "--data-root", data_root, "--run-dir", run_dir]
    p = run_until("train_classifier.py", args, "epoch 2/15", signal.SIGINT)
    assert p.returncode == 130 and "--resume" in p.stderr and "Traceback" not in p.stderr, p.stderr
    path = os.path.join(run_dir, "classifier.pt")
    assert 2 <= tldr.load_checkpoint(path, "classifier")["epoch"] < 15
    resumed = ok(run_script("train_classifier.py", *args, "--resume"))
    assert "resuming" in resumed.stdout
    assert_identical(load(runs["classifier"]), load(path))


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def bad_checkpoint(kind, runs, folder):
    """Write a bad --classifier of `kind`; returns its path and a phrase the error must hold."""
    path = str(folder / f"{kind}.pt")
    good = open(runs["classifier"], "rb").read()
    if kind == "truncated":
        open(path, "wb").write(good[:len(good) // 2])
        return path, "not a readable checkpoint"
    if kind == "random-bytes":
        open(path, "wb").write(os.urandom(4096))
        return path, "not a readable checkpoint"
    if kind == "runs-code":
        torch.save({"kind": "classifier", "payload": RunsCode(f"touch {folder / 'pwned'}")}, path)
        return path, "would run Python code"
    if kind == "generator":
        shutil.copy(os.path.join(runs["reconstruct_dir"], "generator0.pt"), path)
        return path, "is a generator checkpoint, expected a classifier"
    if kind == "other-dataset":
        ckpt = load(runs["classifier"])
        torch.save(ckpt | {"dataset": "fmnist"}, path)
        return path, "is a classifier for fmnist, but --dataset is mnist"
    if kind == "missing-keys":
        ckpt = load(runs["classifier"])
        del ckpt["subset_indices"]
        torch.save(ckpt, path)
        return path, "an incomplete or older classifier checkpoint (no subset_indices)"


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "runs-code", "generator", "other-dataset",
                                  "missing-keys"])
def test_bad_classifier_is_refused_and_changes_nothing(kind, runs, data_root, tmp_path):
    path, problem = bad_checkpoint(kind, runs, tmp_path)
    before = hashes(runs["reconstruct_dir"]) | hashes(runs["classifier_dir"])
    # --overwrite: even a run allowed to replace the finished one must fail before touching it
    p = run_in_process("reconstruct.py", *GENERATORS, "--classifier", path, "--data-root", data_root,
                       "--run-dir", runs["reconstruct_dir"], "--overwrite")
    one_line_error(p, path, problem)
    assert not os.path.exists(tmp_path / "pwned")
    assert hashes(runs["reconstruct_dir"]) | hashes(runs["classifier_dir"]) == before


def test_corrupt_generator_checkpoint_on_resume(runs, data_root, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(runs["reconstruct_dir"], run_dir)
    os.remove(os.path.join(run_dir, "metrics.json"))  # a stopped run ...
    bad = os.path.join(run_dir, "generator1.pt")      # ... whose last checkpoint got truncated
    open(bad, "r+b").truncate(1000)
    before = hashes(run_dir)
    p = run_in_process("reconstruct.py", *GENERATORS, "--classifier", runs["classifier"], "--data-root", data_root,
                       "--run-dir", run_dir, "--resume")
    one_line_error(p, bad, "not a readable checkpoint")
    assert hashes(run_dir) == before


@pytest.mark.parametrize("flags", [["--lr", "0.01"], ["--eta3", "2"], ["--batch-size", "4"], ["--flip"],
                                   ["--flip", "4"], ["--shift", "1"]])
def test_resume_with_other_training_flags_is_refused(flags, runs, data_root, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(runs["reconstruct_dir"], run_dir)
    os.remove(os.path.join(run_dir, "metrics.json"))  # a stopped run
    before = hashes(run_dir)
    p = run_in_process("reconstruct.py", *GENERATORS, "--classifier", runs["classifier"], "--data-root", data_root,
                       "--run-dir", run_dir, "--resume", *flags)
    one_line_error(p, os.path.join(run_dir, "generator0.pt"), "was started with", "resume with the same flags")
    assert hashes(run_dir) == before


@pytest.mark.parametrize("old,flags", [(None, []), (False, []), (True, ["--flip"])])
def test_checkpoints_from_before_shift_and_flip_classes_resume(old, flags, runs, data_root, tmp_path):
    """Checkpoints saved before --shift (no "shift" key) and before --flip took classes
    ("flip" absent, or True / False for every class / none) resume with the same flags."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(runs["reconstruct_dir"], run_dir)
    os.remove(os.path.join(run_dir, "metrics.json"))  # a stopped run ...
    for k in range(2):                                 # ... whose checkpoints are of the older kind
        path = os.path.join(run_dir, f"generator{k}.pt")
        ckpt = tldr.load_checkpoint(path, "generator")
        del ckpt["shift"], ckpt["flip"]
        tldr.save_pt(ckpt if old is None else ckpt | {"flip": old}, path)
    p = run_in_process("reconstruct.py", *GENERATORS, "--classifier", runs["classifier"], "--data-root", data_root,
                       "--run-dir", run_dir, "--resume", *flags)
    ok(p)
    assert "resuming at step" in p.stdout and os.path.exists(os.path.join(run_dir, "metrics.json"))


@pytest.mark.parametrize("flags,error", [([], None), (["--blocks", "3"], "'blocks': 3"),
                                         (["--convs", "2"], "'convs': 2")])
def test_classifier_checkpoint_from_before_blocks_resumes(flags, error, runs, data_root, tmp_path):
    """A stopped classifier saved before --blocks and --convs existed (neither in its
    config) had two blocks of one conv: it resumes with the defaults, and not with others."""
    run_dir = str(tmp_path / "classifier")
    shutil.copytree(runs["classifier_dir"], run_dir)
    os.remove(os.path.join(run_dir, "metrics.json"))  # a stopped run ...
    path = os.path.join(run_dir, "classifier.pt")
    ckpt = tldr.load_checkpoint(path, "classifier")
    del ckpt["config"]["blocks"], ckpt["config"]["convs"]  # ... of the older kind
    tldr.save_pt(ckpt, path)
    p = run_script("train_classifier.py", *CLASSIFIER, "--data-root", data_root, "--run-dir", run_dir,
                   "--resume", *flags)
    if error:
        one_line_error(p, path, "was started with config=", error)
    else:
        ok(p)
        assert "resuming" in p.stdout and os.path.exists(os.path.join(run_dir, "metrics.json"))


def test_finished_run_is_not_overwritten(runs, data_root):
    before = hashes(runs["reconstruct_dir"])
    p = run_script("reconstruct.py", *GENERATORS, "--classifier", runs["classifier"], "--data-root", data_root,
                   "--run-dir", runs["reconstruct_dir"])
    one_line_error(p, runs["reconstruct_dir"], "finished run", "--resume", "--overwrite")
    assert hashes(runs["reconstruct_dir"]) == before


def test_run_folder_rules(tmp_path):
    """In process: what tldr.prepare_run_dir lets through, and what --overwrite clears."""
    def prepare(**flags):
        return tldr.prepare_run_dir(str(tmp_path), "metrics.json", argparse.Namespace(**{
            "resume": False, "overwrite": False} | flags))
    (tmp_path / "args.json").write_text("{}")  # a start that failed before writing anything else
    assert prepare() is False                   # is not a stopped run
    (tmp_path / "generator0.pt").write_text("old")
    with pytest.raises(tldr.TLDRError, match="stopped run; pass --resume"):
        prepare()
    args_json = (tmp_path / "args.json").read_text()
    assert prepare(resume=True) is False and (tmp_path / "args.json").read_text() == args_json  # kept
    (tmp_path / "metrics.json").write_text("{}")
    assert prepare(resume=True) is True  # finished: nothing to resume
    (tmp_path / "grid.png").write_text("old")
    # a replacement run, if stopped, must neither look finished nor resume old checkpoints
    assert prepare(overwrite=True) is False
    assert sorted(os.listdir(tmp_path)) == ["args.json", "grid.png"]


def test_non_finite_loss_stops_with_the_last_good_checkpoint(monkeypatch):
    """In process: a loss term turns NaN at step 3; the error names it and the step,
    and no state after step 2 was saved."""
    classifier = tldr.Classifier(channels=1, image_size=28, width=4, hidden=8)
    generator = tldr.Generator(conditioning="label", channels=1, image_size=28, latent_dim=4, width=4)
    losses, steps_saved = tldr.inversion_losses, []

    def nan_at_step_3(*args):
        terms = losses(*args)
        if len(steps_saved) == 2:
            terms["cos"] = terms["cos"] * float("nan")
        return terms
    monkeypatch.setattr(tldr, "inversion_losses", nan_at_step_3)
    with pytest.raises(tldr.TLDRError, match=r"'cos' became non-finite at step 3; the last good checkpoint is kept"):
        tldr.train_generator(generator, classifier, reconstruct=False, steps=5, batch_size=4, lr=1e-3,
                             weights={w: 1.0 for w in tldr.TERMS.values()}, epsilon=0.1, device="cpu",
                             save=lambda state: steps_saved.append(state["step"]), checkpoint_every=1,
                             log=lambda line: None)
    assert steps_saved == [1, 2]
