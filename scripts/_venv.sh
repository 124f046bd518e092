# Sourced by scripts/dev and scripts/test: create .venv and install rumor into it.
# $1: "test" to include the test extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    "$PY" -m venv "$ROOT/.venv"
fi
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
stamp="$ROOT/.venv/.installed$extra"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$ROOT/.venv/bin/pip" install --disable-pip-version-check -q -e "$ROOT$extra"
    touch "$stamp"
fi
