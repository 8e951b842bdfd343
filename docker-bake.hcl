# Docker Bake definition for the pgsteward images, following the conventions
# of CloudNativePG's postgres-containers: a `default` group that is the matrix
# PostgreSQL major × image type × Debian base, each target built for
# linux/amd64 and linux/arm64, with OCI labels and annotations, an SBOM and a
# provenance attestation.
#
#   docker buildx bake --print                                  # what would be built
#   docker buildx bake --push                                   # all 12 targets
#   docker buildx bake --push postgresql-18-standard-trixie     # one target
#   docker buildx bake --push --set "*.platform=linux/amd64"    # one platform
#   registry=ghcr.io/pgsteward docker buildx bake --push        # another registry
#
# Target names: postgresql-<major>-<type>-<base>. Tags, for each target:
#   <registry>/<image>:<major>-<type>-<base>          e.g. 18-standard-trixie
#   <registry>/<image>:<full version>-<type>-<base>   e.g. 18.6-standard-trixie
#
# The operator image (images/operator) gets its own target and group beside
# these; it is deliberately not part of the `default` group.

# Registry (and namespace) the images are tagged for and pushed to
variable "registry" {
  default = "localhost:5000"
}

# Repository name of the PostgreSQL images under the registry
variable "image" {
  default = "postgres"
}

# Source revision (git commit) recorded in labels and annotations
variable "revision" {
  default = ""
}

# Source repository URL recorded in labels and annotations
variable "source" {
  default = "https://github.com/pgsteward/pgsteward"
}

# The minor releases of November 2026 (18.6, 17.12, 16.16). Bump them with each
# quarterly release, when the official postgres images move to it: the
# <full version> tags must name what the image really contains.
# PostgreSQL major -> the full version the official postgres images ship
variable "pgVersions" {
  default = {
    "16" = "16.16"
    "17" = "17.12"
    "18" = "18.6"
  }
}

variable "platforms" {
  default = ["linux/amd64", "linux/arm64"]
}

now = timestamp()

group "default" {
  targets = ["postgresql"]
}

target "postgresql" {
  matrix = {
    pgMajor = ["16", "17", "18"]
    tgt     = ["minimal", "standard"]
    base    = ["bookworm", "trixie"]
  }
  name       = "postgresql-${pgMajor}-${tgt}-${base}"
  context    = "images/postgres"
  dockerfile = "Dockerfile"
  target     = tgt
  platforms  = platforms
  args = {
    PG_MAJOR = pgMajor
    BASE     = base
    VERSION  = pgVersions[pgMajor]
    REVISION = revision
    CREATED  = now
  }
  tags = [
    "${registry}/${image}:${pgMajor}-${tgt}-${base}",
    "${registry}/${image}:${pgVersions[pgMajor]}-${tgt}-${base}",
  ]
  labels = {
    "org.opencontainers.image.created"  = now
    "org.opencontainers.image.version"  = pgVersions[pgMajor]
    "org.opencontainers.image.revision" = revision
    "org.opencontainers.image.source"   = source
  }
  # Manifest-level only: buildkit refuses index annotations on a
  # single-platform export, which `--set "*.platform=linux/amd64"` makes.
  annotations = [
    "manifest:org.opencontainers.image.created=${now}",
    "manifest:org.opencontainers.image.title=pgsteward PostgreSQL ${pgMajor} (${tgt}, ${base})",
    "manifest:org.opencontainers.image.description=PostgreSQL ${pgVersions[pgMajor]} from the official postgres:${pgMajor}-${base} image, with pgsteward's entrypoint, scripts and config${tgt == "standard" ? ", WAL-G and cron" : ""}",
    "manifest:org.opencontainers.image.version=${pgVersions[pgMajor]}",
    "manifest:org.opencontainers.image.revision=${revision}",
    "manifest:org.opencontainers.image.source=${source}",
    "manifest:org.opencontainers.image.licenses=Apache-2.0",
    "manifest:org.opencontainers.image.base.name=docker.io/library/postgres:${pgMajor}-${base}",
  ]
  attest = [
    "type=provenance,mode=max",
    "type=sbom",
  ]
}

# The operator image (images/operator/Dockerfile), built from the repository
# root because it compiles the Cargo workspace. Not in the `default` group:
#   docker buildx bake operator
#   registry=ghcr.io/pgsteward operatorTag=0.1.0 docker buildx bake --push operator
# Tag of the operator image; the chart's appVersion for a release.
variable "operatorTag" {
  default = "dev"
}

target "operator" {
  context    = "."
  dockerfile = "images/operator/Dockerfile"
  tags       = ["${registry}/operator:${operatorTag}"]
  labels = {
    "org.opencontainers.image.created"  = now
    "org.opencontainers.image.revision" = revision
    "org.opencontainers.image.source"   = source
  }
}
