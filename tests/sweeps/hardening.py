"""The bad-input corpus of tests/test_hardening.py: real W&B offline runs, damaged on purpose.

`python tests/sweeps hardening sdk <root>` writes the runs with the wandb SDK (offline mode;
call it in a subprocess with a clean WANDB_* environment, see test_hardening.py);
`python tests/sweeps hardening crash <root>` writes one run whose process dies before
`finish`. The rest (damaged copies, clones, stray files, params) is done by functions here.
"""

from __future__ import annotations

import glob
import math
import os
import random
import struct
import time
import zlib
from pathlib import Path

VAL = "val-core/openai/gsm8k/reward/mean@1"
SCRIPT_NAME = "<script>alert(1)</script>"  # suffix of a run name that still parses
SCRIPT_UNPARSEABLE = "<script>alert(3)</script>"  # a whole run name that does not parse
IMG_CONFIG = "<img src=x onerror=alert(2)>"  # a config value
N_CLONES = 1000  # runs of phase hbig, one of them broken
BROKEN_CLONE = 537

# Phase parameters of the corpus (params dir copy): phase -> (thresholds, sections)
PHASES = {
    "hA": ([0.3, 0.5], ["01_load_runs", "02_steps_to_target", "03_training_curves", "06_wall_clock",
                        "08_plan"]),
    "hsingle": ([0.3, 0.5], ["01_load_runs", "02_steps_to_target", "03_training_curves", "08_plan"]),
    "hnoreach": ([0.6, 0.8], ["01_load_runs", "02_steps_to_target", "08_plan"]),
    "hbig": ([0.3, 0.5], ["01_load_runs", "02_steps_to_target"]),
}


def wait_until_stable(path: Path, quiet: float = 0.3, limit: float = 10.0) -> None:
    """Wait until a .wandb file stops growing: wandb-core may outlive the process that logged."""
    deadline, size = time.monotonic() + limit, -1
    while time.monotonic() < deadline and path.stat().st_size != size:
        size = path.stat().st_size
        time.sleep(quiet)


def params_yaml(phase: str) -> str:
    thresholds, sections = PHASES[phase]
    return (f"phase: {phase}\ntitle: \"Hardening corpus: {phase}\"\naxis: prompts\n"
            f"metric: \"val-core/*/reward/mean@*\"\nprefer_source: gsm8k\nn_val: 1319\n"
            f"thresholds: {thresholds}\nsections: [{', '.join(sections)}]\n")


# --------------------------------------------------------------------------------------------
# LevelDB-log framing of .wandb files, written independently of the project's reader
# --------------------------------------------------------------------------------------------
BLOCK = 32768
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)


def frame_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, type, payload) of each physical record of a .wandb byte string."""
    out, pos = [], 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, rtype = struct.unpack_from("<IHB", data, pos)
        if rtype == 0 and length == 0:
            pos += left
            continue
        out.append((pos, rtype, data[pos + 7:pos + 7 + length]))
        pos += 7 + length
    return out


def payloads(data: bytes) -> list[bytes]:
    """Whole record payloads (fragments joined) of an undamaged file."""
    out, pending = [], b""
    for _, rtype, chunk in frame_records(data):
        if rtype == 1:
            out.append(chunk)
        elif rtype == 2:
            pending = chunk
        elif rtype == 3:
            pending += chunk
        elif rtype == 4:
            out.append(pending + chunk)
            pending = b""
    return out


def frame(payload_list: list[bytes]) -> bytes:
    """A .wandb file from record payloads (the writer's algorithm: fragments never cross a block)."""
    out = bytearray(HEADER)
    for payload in payload_list:
        pos, first = 0, True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += b"\0" * left
                left = BLOCK
            chunk = payload[pos:pos + left - 7]
            last = pos + len(chunk) == len(payload)
            rtype = 1 if first and last else 2 if first else 4 if last else 3
            out += struct.pack("<IHB", zlib.crc32(chunk, zlib.crc32(bytes((rtype,)))), len(chunk), rtype)
            out += chunk
            pos += len(chunk)
            first = False
            if last:
                break
    return bytes(out)


def clone_run_file(data: bytes, run_id: str, name: str) -> bytes:
    """The same run under another run id and display name (the run record rewritten)."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for payload in payloads(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "run":
            record.run.run_id = run_id
            record.run.display_name = name
            payload = record.SerializeToString()
        out.append(payload)
    return frame(out)


def history_record_offsets(data: bytes) -> list[int]:
    from wandb.proto import wandb_internal_pb2

    found = []
    for offset, rtype, chunk in frame_records(data):
        if rtype != 1:
            continue
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(chunk)
        except Exception:  # noqa: BLE001 -- a fragment of something else
            continue
        if record.WhichOneof("record_type") == "history":
            found.append(offset)
    return found


def wandb_files(root: Path) -> list[Path]:
    """Every *.wandb file below root, symlinked directories (latest-run) not followed."""
    found = []
    for folder, _dirs, files in os.walk(root, followlinks=False):
        found += [Path(folder) / f for f in files if f.endswith(".wandb")]
    return sorted(found)


def run_file(root: Path, run_id: str) -> Path:
    matches = [p for p in wandb_files(root) if p.name == f"run-{run_id}.wandb"]
    assert len(matches) == 1, (run_id, matches)
    return matches[0]


def damage(root: Path) -> dict:
    """Damaged files, clones and stray files next to the SDK runs. Returns {case: relative path}."""
    made = {}
    bad = root / "damaged"
    bad.mkdir()
    template = run_file(root, "hA008").read_bytes()

    def put(case: str, rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made[case] = rel

    put("empty_file", "damaged/offline-run-20260101_000000-empty1/run-empty1.wandb", b"")
    put("not_a_wandb_file", "damaged/run-zip1.wandb", b"PK\x03\x04" + bytes(range(256)))
    put("header_only", "damaged/offline-run-20260101_000000-hdr1/run-hdr1.wandb", template[:7])
    put("garbage_after_header", "damaged/run-garb1.wandb", template[:7] + random.Random(5).randbytes(6000))
    # a run whose file is cut inside a record (a job killed mid-write)
    trunc = run_file(root, "trunc1")
    data = trunc.read_bytes()
    cut = history_record_offsets(data)[len(history_record_offsets(data)) // 2] + 11
    trunc.write_bytes(data[:cut])
    made["truncated_file"] = trunc.relative_to(root).as_posix()
    # one flipped byte in the CRC of a history record in the middle
    crc = run_file(root, "crc1")
    data = bytearray(crc.read_bytes())
    data[history_record_offsets(bytes(data))[6]] ^= 0xFF
    crc.write_bytes(bytes(data))
    made["flipped_crc"] = crc.relative_to(root).as_posix()
    # stray files: notes, logs, a sync marker, an empty run directory, a directory named *.wandb
    (root / "README.txt").write_text("runs of the hardening corpus\n")
    (root / "wandb" / "debug-internal.log").write_text("log\n")
    (bad / "run-zip1.wandb.synced").write_text("")
    (root / "wandb" / "offline-run-20260101_000000-nothing").mkdir()
    (root / "odd.wandb").mkdir()
    (root / "odd.wandb" / "notes.md").write_text("a directory, not a run file\n")
    made["stray_files"] = "README.txt"
    # phase hbig: N_CLONES copies of one small run under their own ids and names, one broken
    small = run_file(root, "big0000").read_bytes()
    big = root / "hbig"
    for i in range(N_CLONES):
        run_id = f"clone{i:04d}"
        name = f"cbs_hbig_np{8 * (1 + i % 25)}_nr8"
        folder = big / f"offline-run-20260102_000000-{run_id}"
        folder.mkdir(parents=True)
        data = clone_run_file(small, run_id, name)
        if i == BROKEN_CLONE:
            data = data[:7] + random.Random(i).randbytes(len(data) - 7)
        (folder / f"run-{run_id}.wandb").write_bytes(data)
    made["broken_clone"] = f"hbig/offline-run-20260102_000000-clone{BROKEN_CLONE:04d}/run-clone{BROKEN_CLONE:04d}.wandb"
    run_file(root, "big0000").unlink()  # the template itself is not part of the corpus
    return made


# --------------------------------------------------------------------------------------------
# The runs written with the wandb SDK
# --------------------------------------------------------------------------------------------
def accuracy(step: float, batch: int, ceiling: float = 0.8) -> float:
    """A McCandlish-like curve: progress per step B / (B + 96), acc rising to `ceiling`."""
    tau = step * batch / (batch + 96.0)
    return 0.1 + (ceiling - 0.1) * (1.0 - math.exp(-tau / 25.0))


def _settings():
    import wandb

    return wandb.Settings(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                          console="off", save_code=False, disable_code=True, disable_git=True,
                          disable_job_creation=True, silent=True, quiet=True)


def verl_config(n_prompts: int | None, n_rollouts: int | None, **extra) -> dict:
    config: dict = {"trainer": {"n_gpus_per_node": 8, "nnodes": 1, "test_freq": 5}}
    if n_prompts is not None:
        config["data"] = {"train_batch_size": n_prompts}
    if n_rollouts is not None:
        config["actor_rollout_ref"] = {"rollout": {"n": n_rollouts}}
    config.update(extra)
    return config


def write_sdk_runs(root: Path) -> None:
    import wandb

    def start(run_id, name, config, sub="", **kw):
        return wandb.init(mode="offline", dir=str(root / sub) if sub else str(root), project="cbs_hardening",
                          name=name, id=run_id, config=config, settings=_settings(), **kw)

    def train_row(step, batch, extra=None):
        row = {"training/global_step": step, "critic/score/mean": accuracy(step, batch) + 0.05,
               "actor/entropy": 0.5, "actor/grad_norm": 0.3, "perf/time_per_step": 15.0 + 0.01 * batch,
               "timing_s/step": 15.0 + 0.01 * batch}
        row.update(extra or {})
        return row

    def log_run(run, batch, steps=80, val=None, extra=None, start_step=0, scale=1.0, ceiling=0.8):
        val = val or (lambda s: scale * round(accuracy(s, batch, ceiling), 4))
        if start_step == 0:
            run.log({VAL: val(0)}, step=0)
        for s in range(max(start_step, 1), steps + 1):
            row = train_row(s, batch, extra(s) if extra else None)
            if s % 5 == 0:
                row.setdefault(VAL, val(s))
            run.log(row, step=s)

    def simple(run_id, name, n_p, n_r=8, config=None, exit_code=0, **kw):
        run = start(run_id, name, verl_config(n_p, n_r) if config is None else config)
        log_run(run, (n_p or 8) * n_r, **kw)
        run.finish(exit_code=exit_code)

    # phase hA: healthy runs at five batch sizes
    for n_p in (8, 32, 128, 512):
        simple(f"hA{n_p:03d}", f"cbs_hA_np{n_p}_nr8", n_p)
    # NaN and inf values (in the validation metric too)
    simple("nan1", "cbs_hA_np16_nr8", 16,
           extra=lambda s: {3: {"actor/grad_norm": float("nan")}, 4: {"actor/grad_norm": float("inf")},
                            10: {VAL: float("nan")}, 20: {VAL: float("-inf")}}.get(s))
    # a metric logged as a string, the accuracy itself at one eval
    simple("str1", "cbs_hA_np64_nr8", 64,
           extra=lambda s: {6: {"critic/score/mean": "n/a"}, 15: {VAL: "timeout"}}.get(s))
    # duplicate names: replicates
    simple("dupA", "cbs_hA_np256_nr8", 256)
    simple("dupB", "cbs_hA_np256_nr8", 256)
    # accuracy in percent
    simple("pct1", "cbs_hA_np1024_nr8", 1024, scale=100.0)
    # a failed run (exit code 1) that keeps its history
    simple("fail1", "cbs_hA_np48_nr8", 48, steps=40, exit_code=1)
    # config and name disagree: the config wins
    simple("mism1", "cbs_hA_np20_nr8", 20, config=verl_config(24, 8))
    # markup in a parseable run name and in a config value
    simple("xss1", f"cbs_hA_np40_nr8_{SCRIPT_NAME}", 40,
           config=verl_config(40, 8, experiment_note=IMG_CONFIG))
    # runs that must be excluded, each for its reason
    simple("xss2", SCRIPT_UNPARSEABLE, None, config={"note": IMG_CONFIG})
    simple("unparse1", "baseline-run", None, config={"lr": 1e-6})
    simple("nophase1", "my_experiment", 16)
    run = start("noval1", "cbs_hA_np96_nr8_noval", verl_config(96, 8))
    for s in range(1, 30):
        run.log(train_row(s, 768), step=s)
    run.finish()
    simple("nanval1", "cbs_hA_np80_nr8_nanval", 80, val=lambda s: float("nan"))
    # a run resumed with the same id on another node, re-logging steps 40..50 (overlap)
    run = start("resume1", "cbs_hA_np160_nr8", verl_config(160, 8), sub="nodeA")
    log_run(run, 1280, steps=50)
    run.finish()
    run = start("resume1", "cbs_hA_np160_nr8", verl_config(160, 8), sub="nodeB", resume="allow")
    for s in range(40, 81):
        row = train_row(s, 1280, {"critic/score/mean": 2000.0 + s})
        if s % 5 == 0:
            row[VAL] = round(accuracy(s, 1280), 4)
        run.log(row, step=s)
    run.finish()
    # the step counter restarts (verl restarted from the step-30 checkpoint in the same W&B run)
    run = start("restart1", "cbs_hA_np192_nr8", verl_config(192, 8))
    run.log({VAL: 0.1}, step=0)
    w = 1
    for segment, steps in ((1000.0, range(1, 41)), (3000.0, range(30, 81))):
        for s in steps:
            row = train_row(s, 1536, {"critic/score/mean": segment + s})
            if s % 5 == 0:
                row[VAL] = round(accuracy(s, 1536), 4)
            run.log(row, step=w)
            w += 1
    run.finish()
    # runs to damage afterwards (their only file is cut / gets a flipped CRC)
    simple("trunc1", "cbs_hA_np12_nr8", 12)
    simple("crc1", "cbs_hA_np6_nr8", 6)
    # phase hsingle: one batch size only (two replicates)
    simple("single1", "cbs_hsingle_np64_nr8", 64)
    simple("single2", "cbs_hsingle_np64_nr8", 64)
    # phase hnoreach: no run reaches any target
    for n_p in (16, 64, 256):
        simple(f"noreach{n_p}", f"cbs_hnoreach_np{n_p}_nr8", n_p, ceiling=0.35)
    # the template of phase hbig's clones: short, name only (the clones get their own names)
    simple("big0000", "cbs_hbig_np8_nr8", None, config={}, steps=25)
    wandb.teardown()


def write_crashed_run(root: Path) -> None:
    """A process that dies without run.finish() (os._exit), as a killed cluster job does."""
    import wandb

    run = wandb.init(mode="offline", dir=str(root), project="cbs_hardening", name="cbs_hA_np384_nr8",
                     id="crash1", config=verl_config(384, 8), settings=_settings())
    run.log({VAL: 0.1}, step=0)
    for s in range(1, 400):
        row = {"training/global_step": s, "critic/score/mean": 0.2, "perf/time_per_step": 20.0}
        if s % 5 == 0:
            row[VAL] = round(accuracy(s, 3072), 4)
        run.log(row, step=s)
    # killed once wandb-core has flushed some history (on a loaded machine an immediate kill
    # left only the header: the run then has nothing to analyse, which is another case)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = glob.glob(str(root / "wandb" / "offline-run-*-crash1" / "run-crash1.wandb"))
        if files and Path(files[0]).stat().st_size >= 2 * 32768:
            break
        time.sleep(0.05)
    os._exit(1)


def main(argv: list[str]) -> int:
    """`sdk ROOT` or `crash ROOT` (python tests/sweeps hardening ...)."""
    if len(argv) != 2 or argv[0] not in ("sdk", "crash"):
        print(__doc__)
        return 2
    {"sdk": write_sdk_runs, "crash": write_crashed_run}[argv[0]](Path(argv[1]))
    return 0
