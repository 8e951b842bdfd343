"""Backup storage for the image tier, one class per backend the tests run on.

A storage is what a user configures: one base prefix (the scripts append the
major) and, for S3, the endpoint and credentials. `env()` is exactly those
settings, as a user writes them into the pod's environment; the other
methods let a test look at and damage the objects behind WAL-G's back.

    FileStorage(path)                  WALG_FILE_PREFIX=<path>
    S3Storage(server, bucket, path)    WALG_S3_PREFIX=s3://<bucket>/<path>, AWS_ENDPOINT,
                                       AWS_S3_FORCE_PATH_STYLE=true, AWS_REGION,
                                       AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or *_FILE)
"""

from __future__ import annotations

from pathlib import Path

import s3

PREFIX_VARS = ("WALG_FILE_PREFIX", "WALG_S3_PREFIX", "WALG_GS_PREFIX", "WALG_AZ_PREFIX")


class FileStorage:
    kind = "file"

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def base(self) -> str:
        """The base prefix, as PGSTEWARD_RESTORE_SOURCE_PREFIX takes it."""
        return str(self.path)

    def env(self) -> dict:
        return {"WALG_FILE_PREFIX": str(self.path)}

    def walg_env(self, major: int) -> dict:
        """The environment for a direct wal-g call at <base>/<major>."""
        return {**self.env(), "WALG_FILE_PREFIX": str(self.path / str(major))}

    def keys(self, major: int, folder: str) -> list[str]:
        """Object names directly under <base>/<major>/<folder>/, sorted."""
        d = self.path / str(major) / folder
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith("."))

    def top_level(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []

    def delete(self, major: int, folder: str, name: str) -> None:
        (self.path / str(major) / folder / name).unlink()

    def secrets(self) -> list[str]:
        return []


class S3Storage:
    kind = "s3"

    def __init__(self, server: s3.S3Server, bucket: str, path: str):
        self.server = server
        self.bucket = bucket
        self.path = path.strip("/")

    @property
    def base(self) -> str:
        return f"s3://{self.bucket}/{self.path}"

    def credentials(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.server.access_key, "AWS_SECRET_ACCESS_KEY": self.server.secret_key}

    def env(self) -> dict:
        return {"WALG_S3_PREFIX": self.base, "AWS_ENDPOINT": self.server.endpoint,
                "AWS_S3_FORCE_PATH_STYLE": "true", "AWS_REGION": s3.REGION, **self.credentials(),
                "WALG_FILE_PREFIX": "__unset__"}

    def walg_env(self, major: int) -> dict:
        return {**self.env(), "WALG_S3_PREFIX": f"{self.base}/{major}"}

    def keys(self, major: int, folder: str) -> list[str]:
        prefix = f"{self.path}/{major}/{folder}/"
        return sorted(k[len(prefix):] for k in self.server.list_keys(self.bucket, prefix)
                      if "/" not in k[len(prefix):])

    def top_level(self) -> list[str]:
        prefix = f"{self.path}/"
        return sorted({k[len(prefix):].split("/", 1)[0] for k in self.server.list_keys(self.bucket, prefix)})

    def delete(self, major: int, folder: str, name: str) -> None:
        self.server.delete_key(self.bucket, f"{self.path}/{major}/{folder}/{name}")

    def secrets(self) -> list[str]:
        return [self.server.access_key, self.server.secret_key]
