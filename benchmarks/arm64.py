"""Do ONNX Runtime's integer kernels on ARM64 CPUs compute the same logits as on this x86 machine?

    .venv/bin/python benchmarks/arm64.py --setup [--cache-dir .bench-cache/arm64] \\
        [--cpus cortex-a57,cortex-a76,neoverse-n1,max]
    .venv/bin/python benchmarks/arm64.py --models a.onnx,b.onnx [--images 64] \\
        [--cpus cortex-a57,cortex-a76,neoverse-n1,max] [--cache-dir .bench-cache/arm64] \\
        [--out benchmarks/results/arm64.json]
    .venv/bin/python benchmarks/arm64.py --table     # print the table from the JSON only

An arm64 CPython 3.11 (Debian bookworm's packages), numpy and ``onnxruntime==1.31.1`` (the aarch64 wheels) run
under ``qemu-aarch64-static -cpu M``. The CPU models differ in the int8 features ONNX Runtime chooses its kernels
by: cortex-a57 has plain NEON only, cortex-a76 / neoverse-n1 add the dot product (``asimddp``), ``max`` adds i8mm,
SVE2 and SME as well.

``--setup`` builds the arm64 root under ``--cache-dir`` once (what exists is skipped): the .deb files are fetched
with ``apt-get download`` under a private apt configuration (``APT_CONFIG``: its own state, cache and sources.list,
``APT::Architecture "arm64"``), so the host's dpkg and apt state are untouched, and unpacked with ``dpkg -x``; the
wheels are fetched with ``pip download`` for ``manylinux_2_28_aarch64`` / cp311 and unzipped into the root's
``/usr/lib/python3/dist-packages``. qemu 7.2 shows the emulated process the host's /proc/cpuinfo, on which
ONNX Runtime's CPU detection (the cpuinfo library) crashes at import; ``qemu -L ROOT`` opens ``ROOT/proc/cpuinfo``
instead when it exists, so each CPU model gets its own root (``cpus/M``: links to the shared root plus a
``proc/cpuinfo`` in ARM Linux format whose MIDR fields and Features line are read from the emulated CPU itself:
``mrs MIDR_EL1`` and ``getauxval(AT_HWCAP / AT_HWCAP2)``).

Per model (``--models``) the input is the first ``--images`` Fashion-MNIST test images normalised with the
model's ``dfq_deploy.mean`` / ``dfq_deploy.std`` metadata (a seeded standard-normal batch when those are missing).
The same child script (numpy and onnxruntime only: CPUExecutionProvider, optimisation level ALL, one intra-op
thread) runs natively with this interpreter and then under qemu per CPU model; it saves the logits and the graph
ONNX Runtime optimised, whose op types are counted here with ``onnx``. A row compares one CPU's logits with the
native ones: bit-identical, the share of logits that differ, the largest absolute difference and the share of
images whose top-1 class agrees. ``run_s`` is the median of ``--runs`` timed runs of the batch after one warm-up
run (under emulation: a measure of qemu, not of an ARM CPU); ``child_s`` the whole child process. Rows are merged
into ``--out`` under ``model|cpu|images=N`` as soon as they are measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORT_VERSION = "1.31.1"
PY = "3.11"
CPUS = "cortex-a57,cortex-a76,neoverse-n1,max"
SUITES = ("bookworm", "bookworm-updates")
MIRROR, SECURITY = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
# the interpreter, its standard library's shared libraries and the C++ runtime ONNX Runtime links against; their
# Depends / Pre-Depends are followed, except into the packaging tools and data packages a run never touches
DEB_ROOTS = (f"python{PY}-minimal", f"libpython{PY}-minimal", f"libpython{PY}-stdlib", "libstdc++6", "libgcc-s1")
DEB_SKIP = {"dpkg", "tar", "install-info", "debconf", "perl", "perl-base", "perl-modules-5.36", "libperl5.36",
            "mailcap", "media-types", "mime-support", "readline-common"}
# Linux arm64 /proc/cpuinfo feature names, by bit of AT_HWCAP and of AT_HWCAP2
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 "
         "sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm "
          "bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 smef32f32 "
          "smefa64 wfxt ebf16 sveebf16").split()

# run by the arm64 interpreter (-c): MIDR_EL1 (Linux and qemu let EL0 read it) and the hwcaps the CPU model gives
PROBE = r"""
import ctypes, json, mmap
libc = ctypes.CDLL(None)
libc.getauxval.restype, libc.getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write((0xd5380000).to_bytes(4, "little") + (0xd65f03c0).to_bytes(4, "little"))  # mrs x0, midr_el1; ret
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()
print(json.dumps({"hwcap": libc.getauxval(16), "hwcap2": libc.getauxval(26), "midr": midr}))
"""

# the child: numpy and onnxruntime only (it runs natively and under qemu alike)
CHILD = r"""
import json, platform, statistics, sys, time
import numpy as np
import onnxruntime as ort

model, inputs, out_dir, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
so.optimized_model_filepath = out_dir + "/optimized.onnx"
so.log_severity_level = 3  # the "hardware specific optimised model" warning is expected
t0 = time.perf_counter()
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
session_s = time.perf_counter() - t0
x = np.load(inputs)
feed = {sess.get_inputs()[0].name: x}
logits = sess.run(None, feed)[0]
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    again = sess.run(None, feed)[0]
    times.append(time.perf_counter() - t0)
    assert np.array_equal(again, logits), "two runs of one session differ"
np.save(out_dir + "/logits.npy", logits)
try:
    features = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo")
                     if l.startswith(("Features", "flags"))), [])
except OSError:
    features = []
try:
    from numpy._core._multiarray_umath import __cpu_features__ as seen
except ImportError:
    seen = {}
info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
        "onnxruntime": ort.__version__, "providers": sess.get_providers(), "session_s": session_s,
        "run_s": statistics.median(times) if times else None, "run_times_s": times,
        "cpuinfo_features": features, "numpy_cpu_features": sorted(k for k, v in seen.items() if v)}
json.dump(info, open(out_dir + "/info.json", "w"))
"""


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, **kw)


def qemu_path(given: str | None) -> str:
    path = given or shutil.which("qemu-aarch64-static")
    if not path:
        sys.exit("qemu-aarch64-static not found: apt-get install qemu-user-static")
    return path


def clean_env() -> dict:
    """What a child gets: nothing of this process' Python, library or qemu settings."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------------------------- setup: packages
def apt_env(cache: Path) -> dict:
    """A private apt configuration for arm64 under ``cache/apt`` (the host's apt and dpkg state stay untouched)."""
    apt = cache / "apt"
    for d in ("state/lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d",
              "etc/sources.list.d"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "state/status").touch()
    sources = [f"deb [arch=arm64] {MIRROR} {s} main" for s in SUITES]
    sources.append(f"deb [arch=arm64] {SECURITY} bookworm-security main")
    (apt / "sources.list").write_text("\n".join(sources) + "\n")
    conf = {"APT::Architecture": "arm64", "Dir::State": apt / "state", "Dir::State::status": apt / "state/status",
            "Dir::Cache": apt / "cache", "Dir::Etc::sourcelist": apt / "sources.list",
            "Dir::Etc::sourceparts": apt / "etc/sources.list.d", "Dir::Etc::parts": apt / "etc/apt.conf.d",
            "Dir::Etc::preferencesparts": apt / "etc/preferences.d", "Dir::Etc::trustedparts": "/etc/apt/trusted.gpg.d",
            "APT::Sandbox::User": "root"}
    text = "".join(f'{k} "{v}";\n' for k, v in conf.items()) + 'APT::Architectures { "arm64"; };\n'
    (apt / "apt.conf").write_text(text)
    return {**clean_env(), "APT_CONFIG": str(apt / "apt.conf")}


def resolve_debs(env: dict) -> list[str]:
    """``DEB_ROOTS`` and their Depends / Pre-Depends (the first of each alternative), less ``DEB_SKIP``."""
    seen: set[str] = set()
    todo = list(DEB_ROOTS)
    while todo:
        seen.update(todo)
        out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                    "--no-replaces", "--no-enhances", *todo], env=env).stdout
        found, alternative = set(), False
        for line in out.splitlines():
            m = re.match(r"\s*(\|)?(?:Pre)?Depends: (\S+)", line)
            if not m:
                alternative = False
                continue
            name = m.group(2).split(":")[0]
            if not alternative and not name.startswith("<") and name not in DEB_SKIP:
                found.add(name)
            alternative = bool(m.group(1))
        todo = sorted(found - seen)
    return sorted(seen)


def fetch_debs(cache: Path, env: dict) -> list[Path]:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    lists = cache / "apt/state/lists"
    if not any(lists.glob("*Packages*")):
        print("apt-get update (private arm64 configuration)", flush=True)
        _run(["apt-get", "update"], env=env)
    names = resolve_debs(env)
    missing = [n for n in names if not list(debs.glob(f"{n}_*.deb"))]
    if missing:
        print(f"apt-get download: {' '.join(missing)}", flush=True)
        _run(["apt-get", "download", *missing], env=env, cwd=debs)
    return sorted(p for n in names for p in debs.glob(f"{n}_*.deb"))


def fetch_wheels(cache: Path, numpy_version: str) -> list[Path]:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"numpy=={numpy_version}", f"onnxruntime=={ORT_VERSION}"]
    have = {p.name.split("-")[0].lower() + "==" + p.name.split("-")[1] for p in wheels.glob("*.whl")}
    if not all(pin in have for pin in pins):
        print(f"pip download: {' '.join(pins)} (aarch64, cp311)", flush=True)
        _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
              "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
              "--python-version", PY, "--implementation", "cp", "--abi", "cp311", "-d", wheels, *pins])
    return sorted(wheels.glob("*.whl"))


def unpack(prefix: Path, debs: list[Path], wheels: list[Path]) -> None:
    """``dpkg -x`` each .deb and unzip each wheel into the root once (a list of what is unpacked is kept there)."""
    done_file = prefix / ".unpacked"
    done = set(done_file.read_text().split()) if done_file.exists() else set()
    site = prefix / "usr/lib/python3/dist-packages"  # on Debian's sys.path: no PYTHONPATH needed
    for path in [*debs, *wheels]:
        if path.name in done:
            continue
        prefix.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".deb":
            _run(["dpkg", "-x", path, prefix])
        else:
            site.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(path) as z:
                z.extractall(site)
        done.add(path.name)
        done_file.write_text("\n".join(sorted(done)) + "\n")


# ------------------------------------------------------------------------------------------ setup: one root per CPU
def cpuinfo_text(probe: dict, cores: int) -> str:
    """/proc/cpuinfo as arm64 Linux writes it, for the MIDR and hwcaps the emulated CPU reports."""
    feats = [n for i, n in enumerate(HWCAP) if probe["hwcap"] >> i & 1]
    feats += [n for i, n in enumerate(HWCAP2) if probe["hwcap2"] >> i & 1]
    midr = probe["midr"]
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(feats)}\nCPU implementer\t: {midr >> 24 & 0xff:#04x}\n"
             f"CPU architecture: 8\nCPU variant\t: {midr >> 20 & 0xf:#x}\nCPU part\t: {midr >> 4 & 0xfff:#05x}\n"
             f"CPU revision\t: {midr & 0xf}\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(cores))


def cpu_root(cache: Path, model: str, qemu: str) -> Path:
    """``cache/cpus/MODEL``: the shared root's entries (links) and a /proc/cpuinfo for qemu's ``MODEL`` CPU."""
    prefix, root = cache / "prefix", cache / "cpus" / model
    if not (prefix / f"usr/bin/python{PY}").exists():
        sys.exit(f"no arm64 root under {cache}: run with --setup first")
    cpuinfo = root / "proc/cpuinfo"
    if cpuinfo.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    for entry in prefix.iterdir():
        link = root / entry.name
        if entry.name not in ("proc", ".unpacked") and not link.is_symlink():
            link.symlink_to(os.path.relpath(entry, root))
    probe = json.loads(_run([qemu, "-L", prefix, "-cpu", model, prefix / f"usr/bin/python{PY}", "-I", "-c", PROBE],
                            env=clean_env()).stdout)
    cpuinfo.parent.mkdir(exist_ok=True)
    cpuinfo.write_text(cpuinfo_text(probe, os.cpu_count() or 1))
    (root / "probe.json").write_text(json.dumps(probe) + "\n")
    return root


def arm_python(qemu: str, root: Path, model: str) -> list[str]:
    return [qemu, "-L", str(root), "-cpu", model, str(root / f"usr/bin/python{PY}"), "-I"]


def setup(cache: Path, cpus: list[str], qemu: str, numpy_version: str) -> None:
    t0 = time.perf_counter()
    env = apt_env(cache)
    debs = fetch_debs(cache, env)
    wheels = fetch_wheels(cache, numpy_version)
    unpack(cache / "prefix", debs, wheels)
    record_file = cache / "setup.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    for model in cpus:
        root = cpu_root(cache, model, qemu)
        check = "import numpy as n, onnxruntime as o, platform as p; print(p.machine(), n.__version__, o.__version__)"
        out = _run([*arm_python(qemu, root, model), "-c", check], env=clean_env()).stdout.strip()
        features = next(line.split(":", 1)[1].strip() for line in (root / "proc/cpuinfo").read_text().splitlines()
                        if line.startswith("Features"))
        print(f"{model}: {out} | Features: {features}", flush=True)
    size = sum(p.stat().st_size for p in [*debs, *wheels])
    record.update({"debs": [p.name for p in debs], "wheels": [p.name for p in wheels],
                   "download_mib": round(size / 2 ** 20, 1),
                   "root_mib": round(sum(p.stat().st_size for p in (cache / "prefix").rglob("*")
                                         if p.is_file() and not p.is_symlink()) / 2 ** 20, 1)})
    record.setdefault("setup_s", []).append(round(time.perf_counter() - t0, 1))  # one per --setup call
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(debs)} .deb + {len(wheels)} wheels, {record['download_mib']} MiB downloaded, root "
          f"{record['root_mib']} MiB, this setup {record['setup_s'][-1]} s")


# ------------------------------------------------------------------------------------------------ measurement
def model_input(path: Path, n: int) -> tuple[np.ndarray, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "dfq_deploy.mean" in meta and "dfq_deploy.std" in meta:
        from dfq_deploy.data import load_eval_set

        mean, std = json.loads(meta["dfq_deploy.mean"]), json.loads(meta["dfq_deploy.std"])
        x = load_eval_set("fashion-mnist", mean, std, limit=n).images.numpy().astype(np.float32)
        return np.ascontiguousarray(x), f"fashion-mnist test[:{n}]"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [n] + [d.dim_value for d in dims[1:]]
    if not all(shape):
        sys.exit(f"{path}: no dfq_deploy.mean/std metadata and an input of unknown shape")
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32), f"standard normal (seed 0) {shape}"


def integer_ops(ops: dict[str, int]) -> dict[str, int]:
    from dfq_deploy.export.inspect import INTEGER_ADD_OPS, INTEGER_COMPUTE_OPS

    return {k: v for k, v in ops.items() if k in INTEGER_COMPUTE_OPS | INTEGER_ADD_OPS or k.startswith("QLinear")}


def run_child(cmd: list[str], child: Path, model: Path, inputs: Path, work: Path, runs: int) -> dict:
    import onnx

    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, str(child), str(model), str(inputs), str(work), str(runs)], env=clean_env(),
                          text=True, capture_output=True)
    child_s = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}",
                "child_s": round(child_s, 2)}
    info = json.loads((work / "info.json").read_text())
    ops = Counter(n.op_type for n in onnx.load(str(work / "optimized.onnx")).graph.node)
    info.update({"child_s": round(child_s, 2), "op_counts": dict(sorted(ops.items())),
                 "integer_kernels": integer_ops(dict(ops))})
    return info


def compare(logits: np.ndarray, ref: np.ndarray) -> dict:
    if logits.shape != ref.shape:
        return {"bit_identical": False, "error": f"shape {logits.shape} != {ref.shape}"}
    diff = np.abs(logits.astype(np.float64) - ref.astype(np.float64))
    return {"bit_identical": logits.dtype == ref.dtype and logits.tobytes() == ref.tobytes(),
            "share_differing": float(np.mean(logits != ref)), "max_abs_diff": float(diff.max(initial=0.0)),
            "top1_agree": float(np.mean(logits.argmax(1) == ref.argmax(1)))}


def machine(qemu: str, cache: Path) -> dict:
    import onnxruntime

    from dfq_deploy.isa import cpu_info

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    setup_file = cache / "setup.json"
    arm = json.loads(setup_file.read_text()) if setup_file.exists() else {}
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_info": cpu_info(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "qemu": _run([qemu, "--version"]).stdout.splitlines()[0],
            "arm64_debs": arm.get("debs"), "arm64_wheels": arm.get("wheels")}


def merge(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)


def measure(args, cache: Path, qemu: str, out: Path, results: dict) -> None:
    cpus = [c for c in args.cpus.split(",") if c]
    roots = {c: cpu_root(cache, c, qemu) for c in cpus}
    results["machine"] = machine(qemu, cache)
    scratch = Path(tempfile.mkdtemp(prefix="dfq-arm64-"))
    try:
        child = scratch / "child.py"
        child.write_text(CHILD)
        for m in [Path(p) for p in args.models.split(",") if p]:
            model = m.resolve()
            x, source = model_input(model, args.images)
            inputs = scratch / f"{model.stem}-input.npy"
            np.save(inputs, x)
            sha = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
            base = {"model": m.name, "model_sha256": sha, "images": len(x), "input": source}
            key = f"{m.name}|%s|images={len(x)}"
            native = run_child([sys.executable, "-I"], child, model, inputs, scratch / f"{model.stem}-native",
                               args.runs)
            if "error" in native:
                sys.exit(f"{m.name} natively: {native['error']}")
            ref = np.load(scratch / f"{model.stem}-native/logits.npy")
            results["runs"][key % "x86_64"] = {**base, "cpu": "x86_64 (native)", **native,
                                               **compare(ref, ref), "same_graph": True}
            merge(out, results)
            print(f"{m.name} natively: {sum(native['integer_kernels'].values())} integer kernels, "
                  f"{native['run_s']:.3f} s per run", flush=True)
            for c in cpus:
                row = run_child(arm_python(qemu, roots[c], c), child, model, inputs, scratch / f"{model.stem}-{c}",
                                args.runs)
                if "error" not in row:
                    row.update(compare(np.load(scratch / f"{model.stem}-{c}/logits.npy"), ref))
                    row["same_graph"] = row["op_counts"] == native["op_counts"]
                results["runs"][key % c] = {**base, "cpu": c, **row}
                merge(out, results)
                if "error" in row:
                    print(f"{m.name} on {c}: {row['error']}", flush=True)
                else:
                    print(f"{m.name} on {c}: bit-identical {row['bit_identical']}, max |diff| "
                          f"{row['max_abs_diff']:.3g}, {row['run_s']:.2f} s per run", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def print_table(results: dict) -> None:
    m = results.get("machine", {})
    print(f"\nreference: {m.get('cpu')} natively, ONNX Runtime {m.get('onnxruntime')}; emulator: {m.get('qemu')}")
    print("\n| model | CPU | ORT | integer kernels | graph = x86 | bit-identical | logits differing | max abs diff "
          "| top-1 agree | run s | child s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results.get("runs", {}).values():
        if "error" in r:
            print(f"| {r['model']} | {r['cpu']} | | | | error: {r['error'][:80]} | | | | | |")
            continue
        kernels = ", ".join(f"{v} {k}" for k, v in sorted(r["integer_kernels"].items(), key=lambda kv: -kv[1]))
        print(f"| {r['model']} | {r['cpu']} | {r['onnxruntime']} | {sum(r['integer_kernels'].values())}: {kernels} "
              f"| {'yes' if r['same_graph'] else 'no'} | {'yes' if r['bit_identical'] else 'no'} "
              f"| {r['share_differing']:.2%} | {r['max_abs_diff']:.3g} | {r['top1_agree']:.2%} | {r['run_s']:.3f} "
              f"| {r['child_s']:.1f} |")
    print("\nrun s: median time of one run of the batch (under qemu: emulation speed, not an ARM CPU's); "
          "child s: the whole child process (start, session, warm-up and timed runs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="build the arm64 root under --cache-dir (idempotent)")
    ap.add_argument("--models", default="", help="comma-separated ONNX files")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--cpus", default=CPUS, help="qemu -cpu models")
    ap.add_argument("--runs", type=int, default=1, help="timed runs after the warm-up run")
    ap.add_argument("--cache-dir", default=None, help="default: .bench-cache/arm64 in the repository")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/arm64.json in the repository")
    ap.add_argument("--numpy", default=np.__version__, help="the arm64 numpy version (default: this numpy's)")
    ap.add_argument("--qemu", default=None, help="default: qemu-aarch64-static on PATH")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else ROOT / ".bench-cache/arm64"
    cache = cache if cache.is_absolute() else ROOT / cache
    out = Path(args.out) if args.out else ROOT / "benchmarks/results/arm64.json"
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    if args.table:
        print_table(results)
        return 0
    qemu = qemu_path(args.qemu)
    if args.setup:
        setup(cache.resolve(), [c for c in args.cpus.split(",") if c], qemu, args.numpy)
    if args.models:
        measure(args, cache.resolve(), qemu, out, results)
        print_table(results)
    elif not args.setup:
        ap.error("give --setup, --models or --table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
