"""The operator on a real node: installed by the README's Helm line, driving
PostgreSQL pods on the kubelet, checked as a user checks (kubectl get, wait,
events, psql through the Service, rows written before and counted after).

tier.sh runs this file on the local Kubernetes with its node (with-cluster.sh
--node), after importing the operator image and the PostgreSQL 17 and 18
images into the node's containerd. The figures (time to Ready, downtime seen
by a client polling through the Service) are printed in the summary.

Backups and restores (scenarios 2, 4 and 8 of issue 12) go to file storage
on a second claim, with the image's labelled WAL-G stand-in
(e2e/standins/wal-g, file storage only): real WAL-G cannot be had from a
registry here (docs/walg.md), and without it there is no S3 run. Not here
yet for that reason: the PgBackup to the S3 server and the PITR clone
(scenario 3; file storage mounts its claim at the prefix itself, so a clone
cannot also reach the source's prefix).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import leakcheck  # noqa: E402  (the leak check every tier shares)

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PGSTEWARD_CACHE", "/var/cache/pgsteward"))
PSQL = str(CACHE / "pg" / "18" / "bin" / "psql")
NODE_DIR = Path(os.environ.get("PGSTEWARD_NODE_DIR", "/tmp/pgsteward-node"))
NAMESPACE = "default"
OPERATOR_NS = "pgsteward-system"
# The images on this node are built on bookworm (image.sh): the only change
# to the README's Helm line.
VARIANT_OVERRIDE = "--set postgresImage.variant=standard-bookworm"

FIGURES: dict[str, str] = {}
LEAKS: list[str] = []


def kubectl(*args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=input, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def get(kind: str, name: str, ns: str = NAMESPACE) -> dict:
    return json.loads(kubectl("-n", ns, "get", kind, name, "-o", "json"))


def condition(name: str, type_: str) -> dict:
    for c in get("pginstance", name).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def wait_for(what: str, predicate, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except AssertionError as e:
            last = str(e)
            value = None
        else:
            value = last
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last}); "
                         f"{describe_hint()}")


def describe_hint() -> str:
    return kubectl("get", "pginstance,statefulset,pod,pvc", "-A", "-o", "wide", check=False)[-3000:]


def wait_ready(name: str, timeout: float = 300) -> float:
    """Seconds until Ready=True (for the generation applied)."""
    start = time.monotonic()

    def ready():
        i = get("pginstance", name)
        st = i.get("status", {})
        c = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
        return c.get("status") == "True" and st.get("observedGeneration") == i["metadata"]["generation"]

    wait_for(f"{name} Ready", ready, timeout)
    return time.monotonic() - start


def password(name: str) -> str:
    secret = get("secret", f"{name}-superuser")
    return base64.b64decode(secret["data"]["password"]).decode()


def service_ip(name: str) -> str:
    return get("service", name)["spec"]["clusterIP"]


def psql(name: str, sql: str, timeout: float = 30) -> str:
    """psql through the instance's Service (its cluster IP: kube-proxy's rules
    apply on this host too), with the generated superuser password."""
    env = {**os.environ, "PGPASSWORD": password(name), "PGCONNECT_TIMEOUT": "5"}
    out = subprocess.run([PSQL, "-h", service_ip(name), "-U", "postgres", "-d", "postgres",
                          "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"psql on {name}: {out.stderr.strip()}")
    return out.stdout.strip()


def write_rows(name: str, table: str, n: int) -> None:
    psql(name, f"create table if not exists {table} (id int primary key, note text); "
               f"insert into {table} select g, 'row ' || g from generate_series(1, {n}) g")


def count(name: str, table: str) -> int:
    return int(psql(name, f"select count(*) from {table}"))


def postmaster_start(name: str) -> str:
    return psql(name, "select pg_postmaster_start_time()")


def apply_instance(name: str, version: int = 18, parameters: dict | None = None) -> None:
    spec = {"postgresVersion": version, "storage": {"size": "1Gi"}}
    if parameters:
        spec["config"] = {"parameters": parameters}
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance",
        "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}))


def patch_spec(name: str, spec: dict) -> None:
    kubectl("-n", NAMESPACE, "patch", "pginstance", name, "--type", "merge", "-p", json.dumps({"spec": spec}))


def delete_instance(name: str) -> None:
    # Before the pods and their logs go: the shared leak check.
    LEAKS.extend(leakcheck.find_leaks(leakcheck.cluster_credentials(), leakcheck.cluster_sources()))
    kubectl("-n", NAMESPACE, "delete", "pginstance", name, "--ignore-not-found", "--wait=true", timeout=180)
    wait_for(f"{name}'s pod gone", lambda: not kubectl("-n", NAMESPACE, "get", "pod", f"{name}-0",
                                                       "--ignore-not-found", "-o", "name"), 180)


def events(name: str) -> list[str]:
    items = json.loads(kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                               f"involvedObject.name={name},involvedObject.kind=PgInstance", "-o", "json"))
    return [f"{e['reason']}: {e.get('message', '')}" for e in items["items"]]


class Poller:
    """A client that runs `select 1` through the Service every 0.2 s; the
    downtime is the longest run of failed attempts, from the first failure to
    the next success."""

    def __init__(self, name: str):
        self.ip, self.env = service_ip(name), {**os.environ, "PGPASSWORD": password(name),
                                               "PGCONNECT_TIMEOUT": "2"}
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            ok = subprocess.run([PSQL, "-h", self.ip, "-U", "postgres", "-d", "postgres", "-XAtqc", "select 1"],
                                capture_output=True, env=self.env).returncode == 0
            self.samples.append((t, ok))
            time.sleep(max(0.0, 0.2 - (time.monotonic() - t)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def downtime(self) -> float:
        worst, down_since = 0.0, None
        for t, ok in self.samples:
            if not ok and down_since is None:
                down_since = t
            elif ok and down_since is not None:
                worst, down_since = max(worst, t - down_since), None
        assert down_since is None, "the client never got through again"
        return worst

    def failures(self) -> int:
        return sum(1 for _, ok in self.samples if not ok)




# ---------------------------------------------------------------- 1. Helm


def quickstart_commands() -> list[str]:
    """The README's quickstart block, minus what makes the kind cluster and
    builds and loads the images with Docker (tier.sh made them here)."""
    block = subprocess.run([str(REPO / "e2e" / "kind" / "quickstart.sh"), "print"],
                           capture_output=True, text=True, check=True).stdout
    keep = [line for line in block.splitlines() if line.startswith(("helm ", "kubectl "))]
    assert keep and keep[0].startswith("helm install"), block
    return [f"{keep[0]} {VARIANT_OVERRIDE}", *keep[1:]]


@pytest.fixture(scope="session")
def operator():
    """The chart installed as the README says; the operator Ready in its pod."""
    commands = quickstart_commands()
    start = time.monotonic()
    subprocess.run(["bash", "-Eeuo", "pipefail", "-c", commands[0]], cwd=REPO, check=True, timeout=330)
    FIGURES["helm install --wait"] = f"{time.monotonic() - start:.1f} s"
    yield commands[1:]
    kubectl("logs", "-n", OPERATOR_NS, "deployment/pgsteward", "--tail", "40", check=False)


def operator_pod() -> str:
    return kubectl("-n", OPERATOR_NS, "get", "pod", "-l", "app.kubernetes.io/name=pgsteward",
                   "-o", "jsonpath={.items[0].metadata.name}")


def test_readme_helm_path_ends_ready_and_psql_writes_and_reads_a_row(operator):
    start = time.monotonic()
    for command in operator:  # apply the minimal sample, wait Ready, psql in the pod
        out = subprocess.run(["bash", "-Eeuo", "pipefail", "-c", command], cwd=REPO,
                             capture_output=True, text=True, timeout=660)
        assert out.returncode == 0, f"{command}: {out.stderr}"
        if "SELECT version()" in command:
            assert "PostgreSQL 18" in out.stdout, out.stdout
    FIGURES["minimal sample: apply to Ready"] = f"{time.monotonic() - start:.1f} s"
    assert kubectl("get", "pginstance", "minimal", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}") == "True"

    # The README's connection: the password from the generated Secret, psql
    # through the Service (here its cluster IP rather than a port-forward).
    psql("minimal", "create table readme (id int primary key, note text); "
                    "insert into readme values (1, 'written through the Service')")
    assert psql("minimal", "select note from readme where id = 1") == "written through the Service"
    delete_instance("minimal")


def test_kubectl_port_forward_to_the_service_reaches_postgres(operator):
    """The README's other path: kubectl port-forward service/NAME (the API
    server streams to the kubelet)."""
    apply_instance("forwarded")
    wait_ready("forwarded")
    pf = subprocess.Popen(["kubectl", "-n", NAMESPACE, "port-forward", "service/forwarded", "25432:5432"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        env = {**os.environ, "PGPASSWORD": password("forwarded"), "PGCONNECT_TIMEOUT": "3"}
        result = wait_for("psql through kubectl port-forward", lambda: subprocess.run(
            [PSQL, "-h", "127.0.0.1", "-p", "25432", "-U", "postgres", "-XAtqc", "select 40 + 2"],
            capture_output=True, text=True, env=env).stdout.strip() == "42", 30)
        assert result
    finally:
        pf.terminate()
        pf.wait()
    delete_instance("forwarded")


# ---------------------------------------------------- 5. reload and restart


def test_a_reloadable_setting_reloads_and_one_that_needs_a_restart_restarts_once(operator):
    name = "config"
    apply_instance(name, parameters={"work_mem": "4MB"})
    FIGURES["new instance: apply to Ready"] = f"{wait_ready(name):.1f} s"
    write_rows(name, "before_config", 100)
    started = postmaster_start(name)

    patch_spec(name, {"config": {"parameters": {"work_mem": "24MB"}}})
    # The kubelet updates a mounted ConfigMap on its own sync (about a minute
    # by default); the operator reloads once the files have changed.
    patched = time.monotonic()
    wait_for("work_mem reloaded", lambda: psql(name, "show work_mem") == "24MB", 300, 2)
    FIGURES["reloadable setting: patch to reloaded"] = f"{time.monotonic() - patched:.1f} s"
    wait_ready(name)
    assert postmaster_start(name) == started, "a reloadable setting restarted the server"

    with Poller(name) as poller:
        patch_spec(name, {"config": {"parameters": {"work_mem": "24MB", "max_connections": "150"}}})
        wait_for("max_connections applied by a restart", lambda: psql(name, "show max_connections") == "150", 300, 2)
        wait_ready(name)
        restarted = postmaster_start(name)
        assert restarted != started
        time.sleep(20)  # a second restart would come within a few reconciles
    assert postmaster_start(name) == restarted, "restarted a second time"
    FIGURES["restart for max_connections: client downtime"] = (
        f"{poller.downtime():.1f} s ({poller.failures()} of {len(poller.samples)} attempts failed)")
    status = get("pginstance", name)["status"]
    assert not status.get("pendingRestart"), status
    assert count(name, "before_config") == 100
    delete_instance(name)


# ------------------------------------------- 6 and 8. upgrade 17 -> 18


def test_upgrade_17_to_18_keeps_every_row_and_survives_an_operator_restart(operator):
    name = "upgrade"
    apply_instance(name, version=17)
    wait_ready(name)
    write_rows(name, "before_upgrade", 1000)
    assert psql(name, "show server_version_num").startswith("17")

    with Poller(name) as poller:
        patch_spec(name, {"postgresVersion": 18})
        wait_for("Upgrading=True", lambda: condition(name, "Upgrading").get("status") == "True", 120, 0.5)
        # 8: the operator is restarted while the upgrade is under way.
        kubectl("-n", OPERATOR_NS, "delete", "pod", operator_pod(), "--wait=false")
        wait_for("the upgrade finished", lambda: get("pginstance", name)["status"].get("postgresVersion") == 18
                 and condition(name, "Upgrading").get("reason") == "Succeeded", 420)
        wait_ready(name)
        wait_for("a client gets through after the upgrade",
                 lambda: poller.samples and poller.samples[-1][1], 60, 0.5)
    FIGURES["upgrade 17 -> 18 (operator restarted during it): client downtime"] = (
        f"{poller.downtime():.1f} s ({poller.failures()} of {len(poller.samples)} attempts failed)")
    assert psql(name, "show server_version_num").startswith("18")
    assert count(name, "before_upgrade") == 1000
    assert any("Upgrade" in e for e in events(name)), events(name)
    delete_instance(name)


def test_an_upgrade_whose_check_fails_rolls_back_to_17_with_the_data_intact(operator):
    """A real pg_upgrade --check failure: a user table with a regproc column
    (pg_upgrade refuses reg* types whose OIDs it cannot keep)."""
    name = "rollback"
    apply_instance(name, version=17)
    wait_ready(name)
    write_rows(name, "before_rollback", 500)
    psql(name, "create table blocks_upgrade (f regproc); insert into blocks_upgrade values ('now')")

    patch_spec(name, {"postgresVersion": 18})
    wait_for("the upgrade rolled back", lambda: condition(name, "Upgrading").get("reason") == "RolledBack", 420)
    wait_for("Degraded UpgradeFailed", lambda: condition(name, "Degraded").get("reason") == "UpgradeFailed", 60)
    wait_for("Ready again on 17", lambda: condition(name, "Ready").get("status") == "True", 300)
    status = get("pginstance", name)["status"]
    assert status["postgresVersion"] == 17, status
    assert ":17-" in get("pod", f"{name}-0")["spec"]["containers"][0]["image"]
    assert "regproc" in condition(name, "Degraded").get("message", "") or status.get("failedUpgrade"), status
    assert psql(name, "show server_version_num").startswith("17")
    assert count(name, "before_rollback") == 500
    # Still on 17 a minute later: a rolled-back upgrade is not retried for the same spec.
    time.sleep(15)
    assert get("pginstance", name)["status"]["postgresVersion"] == 17
    delete_instance(name)


# ------------------------------- 2, 4 and 8. backup, in-place restore


BACKUP_CLAIM = "pg-backups"


def backed_up_instance(name: str) -> None:
    """An instance whose backups go to file storage on the claim pg-backups."""
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": BACKUP_CLAIM, "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"postgresVersion": 18, "storage": {"size": "1Gi"},
                 "backup": {"file": {"path": "/backups", "claimName": BACKUP_CLAIM}}}}))


def on_demand_backup(name: str, instance: str) -> dict:
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"instanceRef": {"name": instance}}}))

    def succeeded():
        status = get("pgbackup", name).get("status", {})
        return status if status.get("phase") == "Succeeded" else None

    return wait_for(f"PgBackup {name} Succeeded", succeeded, 300, 2)


def archived_past(name: str, wal: str) -> bool:
    """pg_stat_archiver, read in the server: the segment is archived."""
    return psql(name, "select coalesce(last_archived_wal, '') >= " + f"'{wal}' from pg_stat_archiver") == "t"


def test_an_on_demand_backup_then_an_in_place_restore_with_an_operator_restart_during_it(operator):
    name = "shop"
    backed_up_instance(name)
    wait_ready(name)
    write_rows(name, "in_backup", 400)

    # 2. An on-demand PgBackup: Succeeded, then lastBackup and BackupHealthy.
    started = time.monotonic()
    backup = on_demand_backup("shop-base", name)
    FIGURES["on-demand PgBackup: apply to Succeeded (file storage, WAL-G stand-in)"] = (
        f"{time.monotonic() - started:.1f} s")
    assert backup.get("backupName") and backup.get("finishLsn"), backup
    wait_for("lastBackup names the PgBackup's backup", lambda: get("pginstance", name)["status"]
             .get("lastBackup", {}).get("name") == backup["backupName"], 120, 2)
    wait_for("BackupHealthy=True", lambda: condition(name, "BackupHealthy").get("status") == "True", 120, 2)
    table = kubectl("get", "pgbackup", "shop-base")
    assert "Succeeded" in table and backup["backupName"] in table, table

    # Rows after the backup, before the target; then the target; then rows
    # after it, and their WAL archived, so replay has to stop at the target.
    psql(name, "insert into in_backup values (401, 'before the target')")
    target = psql(name, "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.5)
    psql(name, "insert into in_backup values (402, 'after the target')")
    wal = psql(name, "select pg_walfile_name(pg_current_wal_lsn())")
    psql(name, "select pg_switch_wal()")
    wait_for(f"{wal} archived", lambda: archived_past(name, wal), 120, 1)

    # 4. An in-place restore through spec.restore, and 8: the operator
    # restarted while it runs.
    patch_spec(name, {"restore": {"requestId": "to-before-402", "target": {"time": target}}})
    wait_for("Restoring=True", lambda: condition(name, "Restoring").get("status") == "True", 120, 0.5)
    kubectl("-n", OPERATOR_NS, "delete", "pod", operator_pod(), "--wait=false")
    wait_for("the restore succeeded", lambda: get("pginstance", name)["status"]
             .get("lastRestore", {}).get("outcome") == "succeeded", 420, 2)
    wait_ready(name)
    status = get("pginstance", name)["status"]
    assert status["lastRestore"]["requestId"] == "to-before-402", status
    assert not status.get("operation"), status
    assert condition(name, "Restoring").get("reason") == "Succeeded"
    assert any(e.startswith("RestoreSucceeded") for e in events(name)), events(name)
    assert count(name, "in_backup") == 401
    assert psql(name, "select note from in_backup where id = 401") == "before the target"
    assert psql(name, "select count(*) from in_backup where id = 402") == "0"
    # The restored server takes writes and archives them.
    psql(name, "insert into in_backup values (403, 'after the restore')")
    assert count(name, "in_backup") == 402
    kubectl("-n", NAMESPACE, "delete", "pgbackup", "shop-base")
    delete_instance(name)
    kubectl("-n", NAMESPACE, "delete", "pvc", BACKUP_CLAIM, f"data-{name}-0")


# ------------------------------------------- 7. kill -9 and pod deletion


def postmaster_pid_on_host(pod: str) -> int:
    """The postmaster of the pod's container, as a host PID: the postgres
    process in the container's PID namespace whose parent is not postgres."""
    container_id = get("pod", pod)["status"]["containerStatuses"][0]["containerID"].split("//", 1)[1]
    sock = NODE_DIR / "containerd" / "containerd.sock"
    tasks = subprocess.run(["ctr", "--address", str(sock), "--namespace", "k8s.io", "tasks", "ls"],
                           capture_output=True, text=True, check=True).stdout
    task_pid = next(int(line.split()[1]) for line in tasks.splitlines() if line.startswith(container_id))
    pidns = os.readlink(f"/proc/{task_pid}/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != pidns or (entry / "comm").read_text().strip() != "postgres":
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if Path(f"/proc/{ppid}/comm").read_text().strip() != "postgres":
                return int(entry.name)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    raise AssertionError(f"no postmaster in {pod}'s container (task {task_pid})")


def test_kill_9_of_postgres_then_deletion_of_the_pod_keep_every_committed_row(operator):
    name = "crash"
    apply_instance(name)
    wait_ready(name)
    write_rows(name, "committed", 2000)
    psql(name, "insert into committed values (2001, 'the last one, just before the kill')")

    os.kill(postmaster_pid_on_host(f"{name}-0"), 9)
    wait_for("a client gets through after kill -9", lambda: count(name, "committed") == 2001, 180, 2)
    wait_ready(name)
    assert psql(name, "select note from committed where id = 2001") == "the last one, just before the kill"

    uid = get("pod", f"{name}-0")["metadata"]["uid"]
    with Poller(name) as poller:
        kubectl("-n", NAMESPACE, "delete", "pod", f"{name}-0")
        wait_for("a new pod", lambda: get("pod", f"{name}-0")["metadata"]["uid"] != uid, 120)
        wait_ready(name)
        wait_for("a client gets through after the pod deletion",
                 lambda: poller.samples and poller.samples[-1][1], 120, 0.5)
    FIGURES["pod deletion: client downtime"] = f"{poller.downtime():.1f} s"
    assert count(name, "committed") == 2001
    delete_instance(name)


# --------------------------------------- 9. delete and recreate: reattach


def test_deleting_the_instance_keeps_claim_and_secret_and_recreating_reattaches(operator):
    name = "reattach"
    apply_instance(name)
    wait_ready(name)
    write_rows(name, "kept", 300)
    secret_uid = get("secret", f"{name}-superuser")["metadata"]["uid"]
    claim_uid = get("pvc", f"data-{name}-0")["metadata"]["uid"]

    delete_instance(name)
    assert get("pvc", f"data-{name}-0")["metadata"]["uid"] == claim_uid
    assert get("secret", f"{name}-superuser")["metadata"]["uid"] == secret_uid

    apply_instance(name)
    wait_ready(name)
    assert get("pvc", f"data-{name}-0")["metadata"]["uid"] == claim_uid
    assert count(name, "kept") == 300
    delete_instance(name)


def test_no_credential_in_any_log_event_status_or_config_map_of_the_run(operator):
    """The shared leak check (e2e/leakcheck.py), run before each instance was
    deleted and once more now, over the generated superuser passwords."""
    credentials = leakcheck.cluster_credentials()
    assert any("-superuser" in name for name in credentials), credentials.keys()
    LEAKS.extend(leakcheck.find_leaks(credentials, leakcheck.cluster_sources()))
    assert not LEAKS, LEAKS

