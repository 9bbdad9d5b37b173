#!/usr/bin/env bash
# Sets up the project's virtual environment, then starts the app, runs the tests, or runs the CLI.
#   bash packaging/dev.sh app [IMAGE]   set up and start DiffEdit Studio
#   bash packaging/dev.sh test [ARGS]   set up and run the test suite (ARGS go to pytest)
#   bash packaging/dev.sh setup         set up only
#   bash packaging/dev.sh cli ARGS      set up and run `diffedit-studio ARGS`
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DIFFEDIT_VENV:-.venv}"
TORCH_SPEC="${DIFFEDIT_TORCH:-torch==2.13.0}"   # a CPU build of it lies on disk on our CI machines

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
    # torch first: a bare requirement with nothing installed would pull a multi-GB build.
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        $pip install "$TORCH_SPEC"
    fi
    # Reinstall the project only when its requirements changed.
    local stamp="$VENV/.diffedit-stamp"
    local want
    want="$(sha256sum pyproject.toml packaging/dev.sh | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        $pip install -e ".[test]"
        # Only for its CLIP BPE vocabulary file (offline tokenizers); its own deps would pull torchvision.
        $pip install --no-deps "open-clip-torch>=2.20"
        echo "$want" > "$stamp"
    fi
}

cmd="${1:-app}"
[ $# -gt 0 ] && shift
setup
case "$cmd" in
    setup) ;;
    app)   exec "$VENV/bin/python" -m desktop_app "$@" ;;
    cli)   exec "$VENV/bin/diffedit-studio" "$@" ;;
    test)  QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" exec "$VENV/bin/python" -m pytest "$@" ;;
    *)     echo "usage: bash packaging/dev.sh app|test|setup|cli [ARGS]" >&2; exit 2 ;;
esac
