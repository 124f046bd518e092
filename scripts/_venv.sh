# Sourced by scripts/dev and scripts/test: create .venv and install rumor into it.
# $1: "test" to include the test extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    if ! "$PY" -m venv "$ROOT/.venv" 2>/dev/null; then
        # Debian's system Python ships venv separately
        rm -rf "$ROOT/.venv"
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        fi
        "$PY" -m venv "$ROOT/.venv"
    fi
fi
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
stamp="$ROOT/.venv/.installed$extra"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$ROOT/.venv/bin/pip" install --disable-pip-version-check -q -e "$ROOT$extra"
    touch "$stamp"
fi
