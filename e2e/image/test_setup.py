"""The set-up that builds the PostgreSQL majors every other test runs on.

A new machine has an empty cache, so these paths run for real only there;
these tests make them run everywhere: the build under a calling `make`, and
the pinned sources when the mirror has moved on.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import harness

INSTALLER = harness.REPO / "e2e" / "setup" / "install-postgres.sh"
SOURCES = harness.REPO / "e2e" / "setup" / "postgres-sources.tsv"


def _fake_postgres_tree(root: Path) -> Path:
    """A source tree whose makefiles fail the way PostgreSQL's do under a
    calling make: at MAKELEVEL 1 it skips its generated headers."""
    src = root / "src"
    (src / "contrib").mkdir(parents=True)
    (src / "configure").write_text("#!/bin/sh\nexit 0\n")
    (src / "configure").chmod(0o755)
    rule = textwrap.dedent("""\
        all install:
        \t@test "$(MAKELEVEL)" = 0 || { echo "MAKELEVEL=$(MAKELEVEL): utils/errcodes.h would not be generated"; exit 1; }
        \t@case "$(MAKEFLAGS)" in *OUTER_MAKE_VARIABLE*) echo "inherited MAKEFLAGS: $(MAKEFLAGS)"; exit 1;; esac
        """)
    (src / "Makefile").write_text(rule)
    (src / "contrib" / "Makefile").write_text(rule)
    return src


def _run_under_make(root: Path, recipe: str) -> subprocess.CompletedProcess:
    (root / "outer.mk").write_text(f"all:\n\t{recipe}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
    # A variable on the outer command line travels in MAKEFLAGS to every
    # make below it, unless the installer drops MAKEFLAGS.
    return subprocess.run(["make", "-j2", "-f", str(root / "outer.mk"), "OUTER_MAKE_VARIABLE=1"],
                          cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)


def test_postgres_build_ignores_the_calling_make(tmp_path):
    src = _fake_postgres_tree(tmp_path)
    # The check itself: the same tree built straight from a recipe fails.
    bare = _run_under_make(tmp_path, f"cd {src} && $(MAKE)")
    assert bare.returncode != 0 and "MAKELEVEL=1" in bare.stdout + bare.stderr, bare.stdout + bare.stderr
    # The installer's build step, under the same make, sees none of it.
    ours = _run_under_make(tmp_path, f"{INSTALLER} build {src} {tmp_path / 'prefix'}")
    assert ours.returncode == 0, ours.stdout + ours.stderr


def _rows() -> list[list[str]]:
    return [line.split("\t") for line in SOURCES.read_text().splitlines()
            if line and not line.startswith("#")]


def test_every_tested_major_is_pinned_with_three_checksummed_files():
    majors = os.environ.get("PGSTEWARD_TEST_MAJORS", "17 18").split()
    rows = _rows()
    for major in majors:
        mine = [r for r in rows if r[0] == major]
        assert len(mine) == 3, f"PostgreSQL {major}: expected .dsc, orig and debian rows, got {mine}"
        assert len({r[2] for r in mine}) == 1, f"PostgreSQL {major}: rows name several versions"
        assert all(re.fullmatch(r"[0-9a-f]{64}", r[3]) for r in mine)
        kinds = sorted(re.sub(r".*\.(dsc|orig\.tar\.\w+|debian\.tar\.\w+)$", r"\1", r[4]) for r in mine)
        assert kinds[0].startswith("debian.tar") and kinds[1] == "dsc" and kinds[2].startswith("orig.tar")


def _fetch(tmp_path: Path, table: str, major: str) -> subprocess.CompletedProcess:
    (tmp_path / "sources.tsv").write_text(table)
    env = dict(os.environ, PGSTEWARD_PG_SOURCES=str(tmp_path / "sources.tsv"))
    return subprocess.run([str(INSTALLER), "fetch", major, str(tmp_path / "files")], env=env,
                          capture_output=True, text=True, timeout=600)


def _pinned(major: str) -> list[list[str]]:
    return [r for r in _rows() if r[0] == major]


def test_unserved_pin_falls_back_to_the_index_version_and_says_so(tmp_path):
    gone = "18.6-0pgsteward.gone"
    table = "".join(f"18\tsid\t{gone}\t{'0' * 64}\tpostgresql-18_{gone}{suffix}\n"
                    for suffix in (".dsc", ".debian.tar.xz"))
    done = _fetch(tmp_path, table, "18")
    assert done.returncode == 0, done.stderr
    used = done.stdout.strip()
    assert re.fullmatch(r"18\.\d+-\S+", used), done.stdout
    assert f"does not serve the pinned postgresql-18_{gone}.dsc" in done.stderr
    assert f"using {used} from the suite's index instead of the pinned {gone}" in done.stderr
    assert (tmp_path / "files" / f"postgresql-18_{used}.dsc").exists()


def test_pinned_file_with_another_checksum_is_refused(tmp_path):
    dsc = next(r for r in _pinned("18") if r[4].endswith(".dsc"))
    table = "\t".join([dsc[0], dsc[1], dsc[2], "f" * 64, dsc[4]]) + "\n"
    done = _fetch(tmp_path, table, "18")
    assert done.returncode == 1
    assert f"but postgres-sources.tsv pins {'f' * 64}; refusing to build it" in done.stderr
    assert done.stdout == ""


def test_no_version_to_be_had_fails_with_one_line(tmp_path):
    table = f"99\tsid\t99.0-1\t{'0' * 64}\tpostgresql-99_99.0-1.dsc\n"
    done = _fetch(tmp_path, table, "99")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert errors == [errors[0]] and "no source of postgresql-99 can be had" in errors[0], done.stderr


def test_each_cached_build_finds_its_modules_relative_to_itself_when_copied_elsewhere(tmp_path):
    """The binary stash copies a major's bin, lib and share onto the volume and
    runs them from there in the next major's image, where the build's own
    paths do not exist. PostgreSQL relocates itself only when its modules and
    binaries keep the layout they were built with: Debian's per-version-dirs
    patch, which fixes the modules at /usr/lib/postgresql/<M>/lib, broke that
    (found by the node tier's 17 -> 18 upgrade)."""
    majors = harness.majors_available()
    assert majors, f"no cached PostgreSQL build in {harness.CACHE / 'pg'}"
    for major in majors:
        prefix = harness.pg_bindir(major).parent
        copy = tmp_path / str(major) / "usr" / "lib" / "postgresql" / str(major)
        copy.mkdir(parents=True)
        for sub in ("bin", "lib", "share"):
            subprocess.run(["cp", "-a", str(prefix / sub), str(copy / sub)], check=True)
        paths = subprocess.run([str(copy / "bin" / "pg_config"), "--pkglibdir", "--sharedir"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert paths == [str(copy / "lib"), str(copy / "share" / "postgresql")], (major, paths)
        assert (copy / "lib" / "pg_stat_statements.so").exists()
