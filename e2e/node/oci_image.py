#!/usr/bin/env python3
"""Writes an OCI image archive (an OCI layout in a tar) of one root
filesystem, for `ctr images import`: no registry and no Docker involved.

    oci_image.py ROOTFS NAME OUT.tar [--cmd JSON] [--entrypoint JSON]

ROOTFS is a directory (debootstrap's, or a tiny one); its whole tree becomes
the image's one layer (GNU tar, numeric owners, /dev /proc /sys empty). NAME
is the full reference the image gets in containerd (io.containerd.image.name).

Exit codes: 0 written; 1 it could not be written; 2 usage.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile


def blob(layout: str, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)


def file_blob(layout: str, path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    os.replace(path, os.path.join(layout, "blobs", "sha256", digest))
    return f"sha256:{digest}", os.path.getsize(os.path.join(layout, "blobs", "sha256", digest))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rootfs")
    p.add_argument("name")
    p.add_argument("out")
    p.add_argument("--cmd", default='["/bin/sh"]', help="the image's Cmd, as JSON")
    p.add_argument("--entrypoint", default="null", help="the image's Entrypoint, as JSON")
    args = p.parse_args()
    if not os.path.isdir(args.rootfs):
        print(f"oci_image.py: {args.rootfs} is not a directory", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as layout:
        os.makedirs(os.path.join(layout, "blobs", "sha256"))
        layer = os.path.join(layout, "layer.tar")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", args.rootfs,
             "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "-cf", layer, "."],
            check=True)
        layer_digest, layer_size = file_blob(layout, layer)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": json.loads(args.cmd),
                "Entrypoint": json.loads(args.entrypoint),
                "WorkingDir": "/",
            },
            # One uncompressed layer: its diff id is its own digest.
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
        config_digest, config_size = blob(layout, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = blob(layout, json.dumps(manifest, sort_keys=True).encode())
        tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": args.name,
                                "org.opencontainers.image.ref.name": tag},
            }],
        }
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump(index, f)
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        tmp = args.out + ".partial"
        with tarfile.open(tmp, "w") as tar:
            for entry in ("oci-layout", "index.json", "blobs"):
                tar.add(os.path.join(layout, entry), arcname=entry)
        os.replace(tmp, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
