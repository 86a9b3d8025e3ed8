#!/bin/sh
# Install the system packages zmem's Python dependencies build against.
# python-lzo has no wheel for Linux x86_64: it compiles against liblzo2 headers.
set -e
if [ -f /usr/include/lzo/lzo1x.h ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "zmem: liblzo2-dev is missing and you are not root; install it (apt-get install liblzo2-dev)" >&2
        exit 1
    fi
fi
if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq liblzo2-dev >/dev/null
elif command -v dnf >/dev/null 2>&1; then
    $SUDO dnf install -y lzo-devel
else
    echo "zmem: install the LZO development headers (liblzo2-dev / lzo-devel) and retry" >&2
    exit 1
fi
