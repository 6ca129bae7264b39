# Sourced by the other scripts: where uv lives and how we talk.
# shellcheck shell=bash

GRIDCLEAR_UV_VERSION=0.13.9
# Use the machine's Python; never download an interpreter behind the user's back.
export UV_PYTHON_DOWNLOADS=never
export UV_NO_PROGRESS=1
: "${GRIDCLEAR_TOOLS:=${XDG_DATA_HOME:-$HOME/.local/share}/gridclear/tools}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Sets UV to a working uv binary, or to nothing if there is none yet.
find_uv() {
  if command -v uv >/dev/null 2>&1; then
    UV=$(command -v uv)
  elif [ -x "$GRIDCLEAR_TOOLS/uv-$GRIDCLEAR_UV_VERSION/bin/uv" ]; then
    UV="$GRIDCLEAR_TOOLS/uv-$GRIDCLEAR_UV_VERSION/bin/uv"
  else
    UV=""
  fi
}

# True when the tools folder holds a promtool (script/bootstrap puts it there).
find_promtool() {
  compgen -G "$GRIDCLEAR_TOOLS/prometheus-*/promtool" >/dev/null
}

# uv keeps .python-version (3.11) where that Python exists; elsewhere any Python
# >= 3.11 on PATH will do (requires-python says so).
if ! command -v python3.11 >/dev/null 2>&1 && [ -z "${UV_PYTHON:-}" ]; then
  export UV_PYTHON=python3
fi
