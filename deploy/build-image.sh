#!/usr/bin/env bash
# Build pyserver's container image the way CI does: the wheels on this machine (pyserver's own
# with its C++ core, and its dependencies), then the Containerfile, which only installs them.
#
#   deploy/build-image.sh [TAG]                 # default localhost/pyserver:latest
#   deploy/build-image.sh --wheels-only         # only the wheels, into dist/wheels
#   deploy/build-image.sh --skip-wheels [TAG]   # the image from the wheels already there
#
# Environment (all optional):
#   BASE_IMAGE        the image to build on (default: the Containerfile's, python:3.11-slim;
#                     CI: localhost/base:bookworm from deploy/build-base.sh)
#   PYSERVER_EXTRAS   extras to install in the image, e.g. "tensorrt,gpu" for the GPU variant
#   PYTHON            the Python that builds the wheels (default python3); its version must be
#                     the base image's (3.11 for the default base and CI's)
#   IMAGE_PYTHON      the base image's command for that Python (default python3)
#   CONTAINER_ENGINE  podman or docker (default: podman when installed, else docker)
#   PYSERVER_PODMAN_ENV=0  do not source deploy/podman.env (a workstation whose podman works as
#                     it is and whose usual image store should receive the image)
set -euo pipefail
cd "$(dirname "$0")/.."

wheels=build
case "${1:-}" in
    --wheels-only) wheels=only; shift ;;
    --skip-wheels) wheels=skip; shift ;;
    -*) echo "build-image.sh: unknown option $1 (--wheels-only, --skip-wheels)" >&2; exit 2 ;;
esac
tag=${1:-localhost/pyserver:latest}
python=${PYTHON:-python3}

if [ "$wheels" != skip ]; then
    echo "build-image.sh: wheels with $("$python" --version 2>&1) into dist/wheels" >&2
    rm -rf dist/wheels
    spec=.
    [ -n "${PYSERVER_EXTRAS:-}" ] && spec=".[${PYSERVER_EXTRAS}]"
    "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir dist/wheels "$spec"
    [ "$wheels" = only ] && exit 0
fi
if ! ls dist/wheels/pyserver-*.whl >/dev/null 2>&1; then
    echo "build-image.sh: no pyserver wheel in dist/wheels (run without --skip-wheels)" >&2
    exit 2
fi

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then engine=podman
    elif command -v docker >/dev/null; then engine=docker
    else echo "build-image.sh: neither podman nor docker is installed" >&2; exit 2
    fi
fi
build_args=(--build-arg "PYSERVER_EXTRAS=${PYSERVER_EXTRAS:-}")
[ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${IMAGE_PYTHON:-}" ] && build_args+=(--build-arg "PYTHON=$IMAGE_PYTHON")
if [ "$engine" = podman ]; then
    if [ "${PYSERVER_PODMAN_ENV:-1}" != 0 ]; then
        # shellcheck source=deploy/podman.env
        . deploy/podman.env
    fi
    # --format docker keeps HEALTHCHECK (the OCI image format has no place for it);
    # --layers=false commits each stage once (each layer is a full copy with vfs storage).
    podman build --format docker --layers=false -f Containerfile -t "$tag" "${build_args[@]}" .
else
    docker build -f Containerfile -t "$tag" "${build_args[@]}" .
fi
echo "build-image.sh: built $tag" >&2
