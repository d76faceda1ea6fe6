#!/bin/sh
# Install everything the tests need: Debian packages when run as root with apt,
# a virtual environment in .venv with the CPU build of torch, the dcmjs test
# helper.  The README's test command then runs .venv/bin/pytest.
set -eu
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc dcmtk dicom3tools pixelmed-apps libpixelmed-java default-jre-headless \
        chromium postgresql >/dev/null
    # Node.js for the dcmjs (OHIF parser) test; some images ship a Node.js that
    # bundles npm and conflicts with Debian's npm package.
    if ! command -v npm >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            nodejs npm >/dev/null || echo "Node.js/npm not installed: the dcmjs test will skip"
    fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -c config/constraints.txt -e '.[dev,onnx]'

if [ -f tests/sr_templates/js/package-lock.json ] && command -v npm >/dev/null 2>&1; then
    (cd tests/sr_templates/js && npm ci --no-audit --no-fund --silent)
fi
