"""Write an OCI image archive from layer tarballs, for `ctr images import`.

    oci_image.py OUT.tar NAME CONFIG.json LAYER.tar...

CONFIG.json is the image's runtime config (Env, Entrypoint, Cmd, User, ...),
as a Dockerfile's instructions would leave it. The layers are uncompressed
tarballs, lowest first. NAME is the reference containerd stores the image
under (io.containerd.image.name), e.g. ghcr.io/pgsteward/postgres:18-standard-bookworm.

Only the standard library: the set-up runs this before anything else exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def _layer(layout: Path, tarball: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    with tarball.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    shutil.copyfile(tarball, layout / "blobs" / "sha256" / digest)
    return f"sha256:{digest}", tarball.stat().st_size


def write_image(out: Path, name: str, runtime: dict, layers: list[Path]) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layout = Path(tmp)
        (layout / "blobs" / "sha256").mkdir(parents=True)
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        descriptors = [_layer(layout, layer) for layer in layers]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": runtime,
            # Uncompressed layers: the diff id is the layer's own digest.
            "rootfs": {"type": "layers", "diff_ids": [d for d, _ in descriptors]},
        }
        config_digest, config_size = _blob(layout, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                       for d, s in descriptors],
        }
        manifest_digest, manifest_size = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
            }],
        }
        (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for entry in sorted(layout.iterdir()):
                tar.add(entry, arcname=entry.name)
        partial.replace(out)


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, name, config = Path(argv[0]), argv[1], json.loads(Path(argv[2]).read_text())
    write_image(out, name, config, [Path(p) for p in argv[3:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
