#!/usr/bin/env python3
"""Replay the spec-fuzzing sample (e2e/cluster/fuzz-cases.json, written by
`cargo test -p pgsteward-api --test spec_fuzz`) on a real API server and
compare each verdict with the offline one.

    fuzz_replay.py CASES NAMESPACE WORKDIR

A create is a dry-run POST; an update creates the old object for real,
writes its status through the status subresource, then sends the new object
as a dry-run PUT (a whole replacement, as the offline check assumes) with the
stored resourceVersion. Every request uses strict field validation, as
kubectl does by default. Each disagreement is printed with the case.

Exit codes: 0 every verdict agreed; 1 at least one disagreed.
"""
import json
import subprocess
import sys

GROUP = "/apis/pgsteward.io/v1alpha1/namespaces"


def kubectl(verb, url, body, work, tag):
    path = f"{work}/fuzz-{tag}.json"
    with open(path, "w") as f:
        json.dump(body, f)
    p = subprocess.run(
        ["kubectl", verb, "--raw", url, "-f", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode == 0, (p.stdout if p.returncode == 0 else p.stderr).strip()


def main():
    cases_file, ns, work = sys.argv[1:4]
    cases = json.load(open(cases_file))
    agreed = 0
    disagreed = []
    counts = {"accepted": 0, "refused": 0, "updates": 0}
    for i, c in enumerate(cases):
        base = f"{GROUP}/{ns}/{c['plural']}"
        new = c["new"]
        name = new["metadata"]["name"]
        new["metadata"]["namespace"] = ns
        strict = "fieldValidation=Strict"
        if c["old"] is not None:
            counts["updates"] += 1
            old = c["old"]
            old["metadata"]["namespace"] = ns
            status = old.pop("status", None)
            ok, out = kubectl("create", f"{base}?{strict}", old, work, f"{i}-old")
            if not ok:
                disagreed.append((i, c, f"the old object, accepted offline, was refused: {out}"))
                continue
            stored = json.loads(out)
            if status is not None:
                stored["status"] = status
                ok, out = kubectl("replace", f"{base}/{name}/status?{strict}", stored, work, f"{i}-status")
                if not ok:
                    disagreed.append((i, c, f"the old object's status was refused: {out}"))
                    continue
                stored = json.loads(out)
            new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
            ok, out = kubectl("replace", f"{base}/{name}?dryRun=All&{strict}", new, work, f"{i}-new")
        else:
            ok, out = kubectl("create", f"{base}?dryRun=All&{strict}", new, work, f"{i}-new")
        counts["accepted" if ok else "refused"] += 1
        if ok == c["accepted"]:
            agreed += 1
        else:
            offline = "accepted" if c["accepted"] else "refused (" + "; ".join(c["messages"]) + ")"
            server = "accepted" if ok else f"refused ({out})"
            disagreed.append((i, c, f"offline {offline}, API server {server}"))
    for i, c, why in disagreed:
        print(f"# fuzz case {i}{' (' + c['name'] + ')' if c.get('name') else ''}: {why}")
        print(f"#   old: {json.dumps(c['old'])}")
        print(f"#   new: {json.dumps(c['new'])}")
    print(
        f"fuzz: {len(cases)} cases on the API server ({counts['accepted']} accepted, "
        f"{counts['refused']} refused, {counts['updates']} updates): "
        f"{agreed} agree, {len(disagreed)} disagree"
    )
    return 1 if disagreed else 0


if __name__ == "__main__":
    sys.exit(main())
