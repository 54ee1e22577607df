"""Benchmark of L_Grad: per-image gradient norms three ways, and whole generator steps.

    python tests/benchmark.py [--quick] [--repeats N] [--device cpu|cuda] [--json PATH]

For the default classifier of each image size (eval mode) and each batch size it times
grad_norms_loop, grad_norms (torch.func) and grad_norms_fast, each together with the
backward pass to the images (the generator needs d norms / d images). Then it times one
reconstruction step (L_Recon with grad_method 'func' or 'fast') against one inversion
step (L_Inv) of the default vector-matrix generator, and checks the targets: a
reconstruction step costs <= 3x an inversion step at batch 64 and 256, and needs < 1.5 GB
at batch 256.

Every measurement runs in its own fresh child process (this file with --child), so no
measurement inherits memory, caches or warm-up from another. Peak memory is what one call
needs above what was in use before it: on CPU the peak resident set size (Linux VmHWM,
reset per call, with glibc made to return freed memory at once: see reset_peak), on CUDA
torch.cuda.max_memory_allocated. Not a pytest test: pytest collects test_*.py only.
"""
import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import torch  # noqa: E402

import tldr  # noqa: E402

SIZES = {28: 1, 32: 3}  # image side -> channels: MNIST-like, SVHN/CIFAR-like
NORMS = {"loop": tldr.grad_norms_loop, "func": tldr.grad_norms, "fast": tldr.grad_norms_fast}
MAX_RATIO = 3.0           # reconstruction step / inversion step, at batch 64 and 256
MAX_PEAK_MB = 1.5 * 1024  # reconstruction step at batch 256: 1.5 GB (MB = 2^20 bytes throughout)
LOOP_BIG_BATCH_REPEATS = 2  # the plain loop above batch 64 is slow: fewer timed repeats
PEAK_CALLS = 2  # calls measured for peak memory (their maximum is reported; it varies by a few %)


# ---------------------------------------------------------------------------------
# What is measured (built and run inside a child)
# ---------------------------------------------------------------------------------

def classifier(size, device):
    """The default classifier for this image size, in eval mode. Its batch-norm running
    statistics are drawn at random (as after training), so eval-mode BN is not the identity."""
    torch.manual_seed(0)
    clf = tldr.Classifier(channels=SIZES[size], image_size=size)
    for m in clf.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return clf.to(device).eval()


def batch(size, n, device):
    """n images in [0, 1] that require grad (as the generator's do) and n labels."""
    x = torch.rand(n, SIZES[size], size, size, device=device, requires_grad=True)
    return x, torch.randint(tldr.NUM_CLASSES, (n,), device=device)


def norms_job(cfg, device):
    """A function doing one norms computation + backward to the images."""
    clf = classifier(cfg["size"], device)
    # Frozen weights as in tldr.train_generator; the loop differentiates w.r.t. them, so it needs them live.
    clf.requires_grad_(cfg["method"] == "loop")
    x, y = batch(cfg["size"], cfg["batch"], device)
    fn = NORMS[cfg["method"]]

    def run():
        fn(clf, x, y).sum().backward(inputs=[x])  # inputs=[x]: to the images only, never into the weights
        x.grad = None
    return run


def step_job(cfg, device):
    """A function doing one generator step without the optimiser update: generate,
    losses, weighted sum, backward, as tldr.train_generator does."""
    clf = classifier(cfg["size"], device).requires_grad_(False)
    gen = tldr.Generator(conditioning="vector-matrix", channels=SIZES[cfg["size"]], image_size=cfg["size"],
                         **cfg["generator"]).to(device)
    recon = cfg["method"] != "inv"

    def run():
        gen.train()
        labels = torch.randint(tldr.NUM_CLASSES, (cfg["batch"],))
        images, labels, p = tldr.generate(gen, labels, recon, gen.config["latent_dim"], device)
        if recon:
            terms = tldr.reconstruction_losses(clf, images, labels, p, cfg["epsilon"], cfg["method"])
        else:
            terms = tldr.inversion_losses(clf, images, labels, p)
        gen.zero_grad(set_to_none=True)
        tldr.weighted_sum(terms, cfg["weights"]).backward()
    return run


def rss_mb(field):
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, from /proc, in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def return_freed_memory_to_os():
    """glibc keeps freed memory resident for reuse, so the resident set of a process that
    already ran a call says little about what the next call needs. From here on, big
    blocks (>= 64 KiB: every sizeable tensor) are mmapped and unmapped when freed, and the
    free heap memory is handed back now; then resident memory tracks live tensors."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed (glibc would otherwise raise it up to 32 MB)
    libc.malloc_trim(0)


def reset_peak(device):
    """Start a peak-memory window; returns the memory in use now (MB), the baseline."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    gc.collect()
    return_freed_memory_to_os()
    # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) to the
    # current one, so VmHWM afterwards is the high-water mark of this window alone; the
    # kernel updates it before any memory is unmapped, so peaks inside a backward count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mb("VmRSS")


def peak_since(device, base):
    """Peak memory above the baseline since reset_peak, in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20 - base
    return rss_mb("VmHWM") - base


def child(cfg):
    """Run one configuration: setup, a warm-up call and `repeats` timed calls (median
    reported), then PEAK_CALLS more calls for memory, after the timing so that the
    allocator settings above cannot change the times. Peak memory is the most any one
    call needed above what setup and the earlier calls left in use: on CPU the peak
    resident set, on CUDA the peak of allocated tensor memory."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(1)
    run = (norms_job if cfg["kind"] == "norms" else step_job)(cfg, device)
    times = []
    for i in range(1 + cfg["repeats"]):  # call 0 is the warm-up, not timed
        sync()
        start = time.perf_counter()
        run()
        sync()
        if i:
            times.append(time.perf_counter() - start)
    peaks = []
    for _ in range(PEAK_CALLS):
        base = reset_peak(device)
        run()
        peaks.append(peak_since(device, base))
    return {"ms": 1000 * statistics.median(times), "peak_mb": max(peaks)}


# ---------------------------------------------------------------------------------
# The parent: checks, jobs, table
# ---------------------------------------------------------------------------------

def machine(args):
    """One line naming the machine, and the same as a dict for --json."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": args.threads,
            "device": args.device, "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if args.device == "cuda":
        info["device"] = f"cuda ({torch.cuda.get_device_name()})"
    line = (f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} thread(s), "
            f"device {info['device']}, 1-min load {info['load_avg']:.1f} before the run")
    return line, info


def check_agreement(size, device):
    """fast and loop norms must equal func (rtol 1e-4) before their timings mean anything."""
    clf = classifier(size, device)
    x, y = batch(size, 16, device)
    ref = tldr.grad_norms(clf, x, y)
    worst = 0.0
    for name in ("fast", "loop"):
        got = NORMS[name](clf, x, y)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6, msg=lambda m: f"{size}px {name} vs func: {m}")
        worst = max(worst, ((got - ref).abs() / ref.abs()).max().item())
    return worst


def measure(cfg, args):
    """Run one configuration in a fresh child process; its last stdout line is the result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"child failed for {cfg}:\n{out.stderr}")
    return cfg | json.loads(out.stdout.strip().splitlines()[-1])


def jobs(args):
    """Every configuration to measure, in table order."""
    import invert  # the generator's and the losses' defaults come from invert.py itself
    inv, rec = invert.parse_args([]), invert.parse_args([], reconstruct=True)
    generator = {k: getattr(rec, k) for k in ("latent_dim", "width", "dropout")}
    sizes, batches, step_batches = ([28], [16, 64], [64]) if args.quick else (list(SIZES), [16, 64, 256], [64, 256])
    common = {"device": args.device, "threads": args.threads}
    for size in sizes:
        for b in batches:
            for method in NORMS:
                repeats = min(args.repeats, LOOP_BIG_BATCH_REPEATS) if method == "loop" and b > 64 else args.repeats
                yield common | {"kind": "norms", "size": size, "batch": b, "method": method, "repeats": repeats}
        for b in step_batches:
            for method, opts in (("inv", inv), ("func", rec), ("fast", rec)):
                weights = {k: getattr(opts, k) for k in invert.DEFAULTS}
                yield common | {"kind": "step", "size": size, "batch": b, "method": method, "repeats": args.repeats,
                                "generator": generator, "epsilon": opts.epsilon, "weights": weights}


def targets(results):
    """Reconstruction / inversion step ratio and reconstruction peak, against the targets."""
    steps = {(r["size"], r["batch"], r["method"]): r for r in results if r["kind"] == "step"}
    rows = []
    for (size, b, method), r in steps.items():
        if method == "inv":
            continue
        ratio = r["ms"] / steps[size, b, "inv"]["ms"]
        row = {"size": size, "batch": b, "grad_method": method, "ratio": ratio, "ratio_met": ratio <= MAX_RATIO,
               "peak_mb": r["peak_mb"]}
        if b == 256:
            row["peak_met"] = r["peak_mb"] < MAX_PEAK_MB
        rows.append(row)
    return rows


def print_table(header, checks, results, goals):
    print(header)
    print("fast and loop norms agree with func (rtol 1e-4): "
          + ", ".join(f"{s}px worst rel. diff {d:.1e}" for s, d in checks.items()))
    print(f"{'image':>5} {'batch':>5}  {'method':<22} {'median ms':>10} {'peak MB':>8} {'runs':>4}")
    names = {"loop": "norms loop", "func": "norms func", "fast": "norms fast"}
    for r in results:
        name = names[r["method"]] if r["kind"] == "norms" else \
            "step inversion" if r["method"] == "inv" else f"step reconstr. ({r['method']})"
        note = "  (fewer runs: slow)" if r["method"] == "loop" and r["batch"] > 64 else ""
        print(f"{r['size']:>5} {r['batch']:>5}  {name:<22} {r['ms']:>10.1f} {r['peak_mb']:>8.1f} {r['repeats']:>4}{note}")
    print(f"targets: reconstruction step <= {MAX_RATIO:g}x inversion step at batch 64 and 256; "
          f"reconstruction step peak < {MAX_PEAK_MB:g} MB (1.5 GB) at batch 256")
    for g in goals:
        line = (f"{g['size']:>5} {g['batch']:>5}  recon/inv ({g['grad_method']}) {g['ratio']:>5.2f}x "
                f"{'met' if g['ratio_met'] else 'NOT met'}")
        if "peak_met" in g:
            line += f"; recon peak {g['peak_mb']:.0f} MB {'met' if g['peak_met'] else 'NOT met'}"
        print(line)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=tldr.HelpFormatter)
    p.add_argument("--repeats", type=int, default=argparse.SUPPRESS,
                   help=f"timed runs per measurement after one warm-up, median reported (default: 3, 2 with "
                        f"--quick; the loop above batch 64 gets at most {LOOP_BIG_BATCH_REPEATS})")
    p.add_argument("--quick", action="store_true", help="smoke run: 28x28 only, batches 16 and 64")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu: peak resident memory (Linux); cuda: peak allocated GPU memory")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per measurement; on a shared 2-core machine 2 threads ran up to 60x slower")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every result to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one configuration
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: this machine has no CUDA device")
    args.repeats = getattr(args, "repeats", 2 if args.quick else 3)
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    header, info = machine(args)

    start = time.time()
    cfgs = list(jobs(args))
    checks = {s: check_agreement(s, torch.device(args.device)) for s in sorted({c["size"] for c in cfgs})}
    results = []
    for i, cfg in enumerate(cfgs):
        print(f"[{i + 1}/{len(cfgs)}] {cfg['kind']} {cfg['size']}px batch {cfg['batch']} {cfg['method']}",
              file=sys.stderr, flush=True)
        results.append(measure(cfg, args))
    goals = targets(results)
    print_table(header, checks, results, goals)
    print(f"wall time {time.time() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "agreement_rel_diff": checks, "results": results,
                       "targets": goals, "wall_s": time.time() - start}, f, indent=2)


if __name__ == "__main__":
    main()
