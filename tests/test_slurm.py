"""The pipeline on a real Slurm cluster: `snakemake --profile profiles/slurm`, unchanged.

Starts a single-node Slurm on this machine (Debian's slurm-wlm 22.05: slurmctld and slurmd on
localhost, sized by `slurmd -C`, no cgroups; accounting through slurmdbd and a private MariaDB, as
on a real cluster, so that `sacct` works; munge), runs the tiny experiment of test_pipeline.py
through the profile (snakemake-executor-plugin-slurm), and checks with `sacct` that setup, training
and evaluation ran as Slurm jobs with what params.yaml `cluster:` gives the preset, that analyse
and report ran locally, and that the report was written. On the way one training job is
pre-empted and requeued by Slurm (`scontrol requeue`, allowed by the profile's `slurm-requeue`),
and the other one's training process is killed on its node, so that the Slurm job fails and
Snakemake resubmits it (the profile's `retries`): both runs resume from their checkpoints.

The node offers two GPU slots bound to no device (the machine needs none: gres.conf names
/dev/null and /dev/zero), so that a preset's `gpus: 1` travels as it would on a GPU cluster:
params.yaml -> the rule's `gpu` resource -> sbatch/srun --gpus=1 -> sacct AllocTRES gres/gpu=1.
The jobs still train on the CPU (device auto finds no CUDA).

Missing packages are installed with apt-get when running as root (CI: `make test` alone). The
test skips, saying why, only when Slurm cannot be installed or its daemons cannot start; with
D2R_REQUIRE_SLURM=1 (set by .ci/run) that is a failure instead.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import (
    EXPERIMENT,
    METHODS,
    REPO,
    TARGET,
    pipeline_env,
    repo_copy,
    tiny_experiment,
)

from d2r.config import DEFAULT_CLUSTER_RESOURCES, ParamsError, load_params, parse_params
from d2r.pipeline.layout import Job, job_params

PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
# program -> Debian package
PROGRAMS = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "sacct": "slurm-wlm",
            "sacctmgr": "slurm-wlm", "slurmdbd": "slurmdbd", "munged": "munge", "munge": "munge",
            "mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server", "mariadb": "mariadb-server"}
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
# One test cluster at a time on a machine (it takes /etc/slurm/slurm.conf and may start munged).
LOCK = Path("/tmp/d2r-test-slurm.lock")
CLUSTER, PARTITION, ACCOUNT = "d2rtest", "debug", "d2r"
RUN_TIMEOUT = 600

# The tiny experiment's Slurm resources (params.yaml `cluster:`); checked against sacct below.
TINY_CLUSTER = {"runtime_min": 7, "eval_runtime_min": 5, "mem_mb": 1500, "cpus": 1, "gpus": 1}
# Long enough (~20 s of epochs) to pre-empt a run between two checkpoints.
EPOCHS, CHECKPOINT_EVERY = 30, 5


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def _missing() -> list[str]:
    return [p for p in PROGRAMS if _which(p) is None]


def _install() -> str | None:
    """apt-get install the missing packages; None when done, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if _which("apt-get") is None:
        return "no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out"
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(proc.stdout + proc.stderr)[-1500:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 2500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} does not exist)"


class SlurmCluster:
    """The daemons of a one-node cluster under `root`; stop() ends the ones it started."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.logs = root / "log"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.linked_conf = False
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), PATH=SBIN_PATH)

    # -- helpers -------------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def start(self, name: str, *cmd: str, **kwargs) -> subprocess.Popen:
        out = open(self.logs / f"{name}.out", "w")
        proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append((name, proc))
        return proc

    def wait_for(self, what: str, ready, log: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       f"{_tail(self.logs / f'{name}.out')}\n{_tail(log)}")
            try:
                if ready():
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{_tail(log)}")

    # -- the daemons ---------------------------------------------------------------------------
    def start_all(self) -> None:
        for d in ("etc", "log", "state", "spool", "munge", "db"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._munge()
        db_port = self._mariadb()
        host, node_line = self._node()
        ports = {"ctld": _free_port(), "slurmd": _free_port(), "dbd": _free_port()}
        self._write_configs(host, node_line, ports, db_port)
        self._link_system_conf()

        self.start("slurmdbd", _which("slurmdbd"), "-D")
        self.wait_for("slurmdbd", lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
                      self.logs / "slurmdbd.log")
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}", "Description=d2r",
                 "Organization=d2r")
        self.run("sacctmgr", "-i", "add", "user", getpass.getuser(), f"Account={ACCOUNT}",
                 f"DefaultAccount={ACCOUNT}")

        self.start("slurmctld", _which("slurmctld"), "-D", "-c")
        self.wait_for("slurmctld", lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0,
                      self.logs / "slurmctld.log")
        self.start("slurmd", _which("slurmd"), "-D", "-N", host)
        self.wait_for(
            "the node to be idle",
            lambda: self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip() == "idle",
            self.logs / "slurmd.log",
        )

    def _munge(self) -> None:
        """Use a munged that answers on the standard socket, else start one there."""
        if self.run("sh", "-c", "munge -n | unmunge", check=False).returncode == 0:
            return
        MUNGE_SOCKET.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        m = self.root / "munge"
        self.start("munged", _which("munged"), "-F", "--force", f"--socket={MUNGE_SOCKET}", f"--key-file={key}",
                   f"--pid-file={m / 'munged.pid'}", f"--log-file={self.logs / 'munged.log'}",
                   f"--seed-file={m / 'munged.seed'}")
        self.wait_for("munged", lambda: self.run("sh", "-c", "munge -n | unmunge", check=False).returncode == 0,
                      self.logs / "munged.log")

    def _mariadb(self) -> int:
        """A private MariaDB on a free port for slurmdbd (Slurm's only accounting storage)."""
        db, port = self.root / "db", _free_port()
        self.run(_which("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db", timeout=300)
        sock = self.root / "db.sock"
        self.start("mariadbd", _which("mariadbd"), "--no-defaults", f"--datadir={db}", f"--socket={sock}",
                   f"--port={port}", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
                   f"--pid-file={self.root / 'db.pid'}", f"--log-error={self.logs / 'mariadb.log'}",
                   "--innodb-buffer-pool-size=64M")
        sql = ["mariadb", f"--socket={sock}", "-u", "root"]
        self.wait_for("mariadbd", lambda: self.run(*sql, "-e", "SELECT 1", check=False).returncode == 0,
                      self.logs / "mariadb.log")
        self.run(*sql, "-e", "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                             "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';")
        return port

    def _node(self) -> tuple[str, str]:
        """This machine as `slurmd -C` sees it: its name and NodeName line (cores, memory)."""
        out = self.run(_which("slurmd"), "-C").stdout
        line = next(line for line in out.splitlines() if line.startswith("NodeName="))
        return line.split()[0].split("=", 1)[1], line

    def _write_configs(self, host: str, node_line: str, ports: dict, db_port: int) -> None:
        r, logs = self.root, self.logs
        dbd = r / "etc" / "slurmdbd.conf"   # next to slurm.conf: where slurmdbd looks (SLURM_CONF)
        dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['dbd']}
SlurmUser=root
PidFile={r / 'slurmdbd.pid'}
LogFile={logs / 'slurmdbd.log'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)
        (r / "etc" / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/null\n"
                                             f"NodeName={host} Name=gpu File=/dev/zero\n")
        self.conf.write_text(f"""ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports['ctld']}
SlurmdPort={ports['slurmd']}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={logs / 'slurmctld.log'}
SlurmdLogFile={logs / 'slurmd.log'}
# no cgroups: processes tracked through /proc, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# only jobs submitted with --requeue may be requeued (profiles/slurm: slurm-requeue)
JobRequeue=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['dbd']}
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
{node_line} NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=60 State=UP
""")

    def _link_system_conf(self) -> None:
        """/etc/slurm/slurm.conf -> ours: the plugin drops SLURM_* variables (SLURM_CONF too) before
        the `srun` inside each job, which then reads Slurm's standard path, as on a real cluster."""
        if SYSTEM_SLURM_CONF.is_symlink() and "pytest-of-" in os.readlink(SYSTEM_SLURM_CONF):
            SYSTEM_SLURM_CONF.unlink()   # left by a run of this test that was killed (we hold LOCK)
        if SYSTEM_SLURM_CONF.exists():
            raise FileExistsError(f"{SYSTEM_SLURM_CONF} exists: this machine has a Slurm installation of its own")
        SYSTEM_SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_SLURM_CONF.symlink_to(self.conf)
        self.linked_conf = True

    def stop(self) -> None:
        if any(name == "slurmctld" for name, _ in self.procs):
            self.run("scancel", "--user", getpass.getuser(), check=False)
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.linked_conf and SYSTEM_SLURM_CONF.is_symlink():
            SYSTEM_SLURM_CONF.unlink()


def _cannot_run(reason: str):
    if os.environ.get("D2R_REQUIRE_SLURM") == "1":
        pytest.fail(f"D2R_REQUIRE_SLURM=1, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        _cannot_run("the Slurm daemons of this test run as root (SlurmUser=root); run the tests as root")
    if _missing():
        why = _install()
        if why or _missing():
            _cannot_run(f"Slurm is not installed ({', '.join(_missing())} missing) and could not be installed: "
                        f"{why or 'the packages did not provide them'}")
    with open(LOCK, "w") as lock:
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _cannot_run(f"another test Slurm cluster has held {LOCK} for 15 minutes")
                time.sleep(2)
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
        try:
            cluster.start_all()
        except (RuntimeError, OSError, subprocess.SubprocessError) as err:
            cluster.stop()
            _cannot_run(f"the Slurm daemons could not start: {err}")
        try:
            yield cluster
        finally:
            cluster.stop()


# ---------------------------------------------------------------------------------------------
# params.yaml `cluster:` (what the Slurm jobs ask for), without a cluster.


def test_cluster_resources_per_preset():
    params = load_params(REPO / "params.yaml")
    paper = params.cluster_resources(params.experiment("mt10").preset)
    assert (paper.gpus, paper.cpus) == (1, 2) and paper.runtime_min >= 24 * 60
    assert params.cluster_resources("smoke").gpus == 0
    assert params.cluster_resources("a-preset-without-entry") == params.cluster["default"]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["cluster"]
    assert parse_params(raw).cluster_resources("paper-mt10") == DEFAULT_CLUSTER_RESOURCES


def test_cluster_is_not_a_training_parameter():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    jobs = [Job("setup", "mt10"), Job("train", "mt10", "d2r", 0), Job("evaluate", "mt10", "d2r", 0)]
    before = [job_params(job, parse_params(raw)) for job in jobs]
    raw["cluster"]["paper-mt10"].update(runtime_min=60, mem_mb=1000, gpus=0)
    assert [job_params(job, parse_params(raw)) for job in jobs] == before   # nothing in any build record


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(nope=dict(c["smoke"])), "params.yaml: cluster.nope: unknown preset 'nope'"),
    (lambda c: c["paper-mt10"].update(gpus=2), "params.yaml: cluster.paper-mt10.gpus: 2 is greater than the maximum of 1"),
    (lambda c: c["smoke"].pop("mem_mb"), "params.yaml: cluster.smoke: 'mem_mb' is a required property"),
    (lambda c: c["smoke"].update(partition="gpu"), "params.yaml: cluster.smoke.partition: unknown key"),
])
def test_cluster_errors_name_the_key(change, message):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    change(raw["cluster"])
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert str(err.value).startswith(message), str(err.value)


# ---------------------------------------------------------------------------------------------
# The tiny experiment on Slurm.


def slurm_params(raw: dict) -> dict:
    raw = tiny_experiment(raw)
    raw["presets"]["tiny"].update(epochs=EPOCHS, checkpoint_every=CHECKPOINT_EVERY, eval_every=10)
    raw.setdefault("cluster", {})["tiny"] = dict(TINY_CLUSTER)
    return raw


def site_profile(repo: Path) -> None:
    """What README "Running on a Slurm cluster" tells a user to edit: partition and account."""
    path = repo / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"] += [f"slurm_partition={PARTITION}", f"slurm_account={ACCOUNT}"]
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


def job_id(cluster: SlurmCluster, comment: str) -> str | None:
    """The running Slurm job whose comment (the plugin's rule_<rule>_wildcards_<...>) is `comment`."""
    out = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i|%k", check=False).stdout
    ids = [line.split("|")[0] for line in out.splitlines() if line.split("|")[-1] == comment]
    return ids[0] if ids else None


SACCT_FIELDS = "JobID,JobName%36,Comment%36,Partition,Account,AllocTRES%48,Timelimit,State,ExitCode,Start,End"


def sacct(cluster: SlurmCluster, run_id: str, *extra: str) -> tuple[str, list[dict]]:
    """The run's Slurm jobs (job name = the plugin's run id): a table to show, and its rows."""
    args = ["sacct", "-X", "--name", run_id, "--starttime", "now-1days", *extra]
    table = cluster.run(*args, f"--format={SACCT_FIELDS}").stdout
    names = [f.split("%")[0] for f in SACCT_FIELDS.split(",")]
    rows = [dict(zip(names, line.split("|"))) for line in
            cluster.run(*args, "--parsable2", "--noheader", f"--format={SACCT_FIELDS}").stdout.splitlines()]
    return table, rows


@pytest.mark.slow
def test_pipeline_on_slurm(slurm, tmp_path):
    repo = tmp_path / "repo"
    repo_copy(repo, slurm_params)
    site_profile(repo)
    env = dict(pipeline_env(), SLURM_CONF=str(slurm.conf))
    env["PATH"] = env["PATH"] + os.pathsep + "/usr/sbin:/sbin"
    log_path = tmp_path / "snakemake.log"
    cmd = [sys.executable, "-m", "snakemake", TARGET, "--profile", "profiles/slurm",
           "--slurm-init-seconds-before-status-checks", "3"]
    comments = {m: f"rule_train_wildcards_{EXPERIMENT}_{m}_0" for m in METHODS}
    ckpts = {m: repo / "results" / EXPERIMENT / m / "seed0" / "checkpoints" for m in METHODS}
    # d2r: pre-empted and requeued by Slurm; mtsac: killed (SIGTERM to its job step, as an OOM
    # killer or a failing node would), so the job FAILS and Snakemake resubmits it (retries).
    # (Not `scancel` alone: plugin 2.8.0 does not take "CANCELLED by <uid>" for an end; README.)
    interrupt = {"d2r": "requeue", "mtsac": "kill"}
    interrupted: dict[str, str] = {}

    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                for method, how in interrupt.items():
                    if method in interrupted or not any(ckpts[method].glob("ckpt-*.pt")):
                        continue
                    jid = job_id(slurm, comments[method])
                    if jid is None:
                        continue
                    if how == "requeue":
                        slurm.run("scontrol", "requeue", jid)
                        # Slurm holds a requeued job back for two minutes (BeginTime) once it is
                        # pending again; release it then.
                        for _ in range(120):
                            state = slurm.run("squeue", "-h", "-j", jid, "-o", "%T", check=False).stdout.strip()
                            if state == "PENDING":
                                slurm.run("scontrol", "update", f"JobId={jid}", "StartTime=now")
                                break
                            time.sleep(0.25)
                    else:
                        slurm.run("scancel", "--signal=TERM", jid)
                    interrupted[method] = jid
                time.sleep(0.5)
        finally:
            if proc.poll() is None:   # timed out: Ctrl-C, so that Snakemake cancels its jobs
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    out = log_path.read_text(errors="replace")
    assert proc.returncode == 0, f"snakemake --profile profiles/slurm failed ({proc.returncode}):\n{out[-8000:]}"
    assert sorted(interrupted) == sorted(METHODS), f"the runs were not interrupted as planned: {interrupted}"

    # The report, from training that ran on Slurm.
    assert (repo / TARGET).exists() and (repo / "metrics" / f"{EXPERIMENT}.json").exists()
    metrics = yaml.safe_load((repo / "metrics" / f"{EXPERIMENT}.json").read_text())
    assert sorted(metrics["methods"]) == sorted(METHODS)

    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    table, rows = sacct(slurm, run_id)
    print(f"\n$ sacct -X --name {run_id} --format={SACCT_FIELDS}\n{table}")
    dup_table, dup_rows = sacct(slurm, run_id, "--duplicates")
    print(f"$ sacct -X --duplicates ... (every start of a job)\n{dup_table}")

    by_rule: dict[str, list[dict]] = {}
    for row in rows:
        rule = re.match(r"rule_([a-z]+)", row["Comment"]).group(1)
        by_rule.setdefault(rule, []).append(row)
    # analyse and report are localrules: never Slurm jobs.
    assert set(by_rule) == {"setup", "train", "evaluate"}, table
    ok = {r["Comment"] for r in rows if r["State"] == "COMPLETED"}
    for method in METHODS:
        for rule in ("train", "evaluate"):
            assert f"rule_{rule}_wildcards_{EXPERIMENT}_{method}_0" in ok, f"{rule} {method} not COMPLETED:\n{table}"
    assert f"rule_setup_wildcards_{EXPERIMENT}" in ok, table
    # Resources from params.yaml cluster.tiny: time limit, memory, CPUs, the GPU; partition, account
    # from the profile.
    for row in rows:
        tres = dict(kv.split("=", 1) for kv in row["AllocTRES"].split(",") if "=" in kv)
        limit = TINY_CLUSTER["runtime_min"] if row["Comment"].startswith("rule_train") else TINY_CLUSTER["eval_runtime_min"]
        assert row["Timelimit"] == f"00:{limit:02d}:00", row
        assert tres.get("mem") == f"{TINY_CLUSTER['mem_mb']}M" and tres.get("cpu") == str(TINY_CLUSTER["cpus"]), row
        assert tres.get("gres/gpu") == "1", row
        assert (row["Partition"], row["Account"]) == (PARTITION, ACCOUNT), row

    # The pre-empted d2r job was requeued by Slurm and restarted under the same job id; the failed
    # mtsac job was resubmitted by Snakemake as a new one. Both resumed from a checkpoint.
    d2r_starts = [r["State"] for r in dup_rows if r["JobID"] == interrupted["d2r"]]
    assert d2r_starts == ["REQUEUED", "COMPLETED"], dup_table
    mtsac = [(r["JobID"], r["State"]) for r in rows if r["Comment"] == comments["mtsac"]]
    assert [state for _, state in mtsac] == ["FAILED", "COMPLETED"] and mtsac[0][0] == interrupted["mtsac"], table
    for method in METHODS:
        train_log = repo / "logs" / EXPERIMENT / method / "seed0" / "train.log"
        assert "resuming from epoch" in train_log.read_text(errors="replace"), f"{method}: no resume\n{_tail(train_log)}"
        run = yaml.safe_load((repo / "results" / EXPERIMENT / method / "seed0" / "run.json").read_text())
        assert run["epochs"] == EPOCHS
        # The logs of the interrupted runs read as one run: every epoch once, from the first
        # (Snakemake deleted the failed job's logs; the checkpoint carried their lines).
        run_dir = repo / "results" / EXPERIMENT / method / "seed0"
        epochs = [yaml.safe_load(line)["epoch"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, EPOCHS + 1)), (method, epochs)
        evals = [yaml.safe_load(line)["epoch"] for line in (run_dir / "eval_log.jsonl").read_text().splitlines()]
        assert evals == list(range(10, EPOCHS + 1, 10)), (method, evals)

    # The GPU jobs overlapped: profiles/default's cap of one GPU job applies to this machine only.
    gpu_jobs = sorted((r["Start"], r["End"]) for r in rows if r["State"] == "COMPLETED")
    assert any(b[0] < a[1] for a, b in zip(gpu_jobs, gpu_jobs[1:])), f"no two GPU jobs ran at once:\n{table}"

    # Logs: the plugin's sbatch log of every job (kept), and the rules' own logs as on one machine.
    for method in METHODS:
        assert list((repo / "logs" / "slurm" / "rule_train" / f"{EXPERIMENT}_{method}_0").glob("*.log"))
        assert (repo / "logs" / EXPERIMENT / method / "seed0" / "evaluate.log").exists()
