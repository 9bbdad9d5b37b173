#!/usr/bin/env bash
# Builds the one-folder bundle (PyInstaller) and runs the frozen app's --self-test.
#   bash packaging/build.sh           build (incremental) into build/dist/DiffEditStudio, self-test it
#   bash packaging/build.sh --check   CI: clean build, self-test from an empty directory with a
#                                     minimal environment, write build/bundle-report.json
# Needs the project's venv (python3 packaging/dev.py setup). The torch in that venv is the one that
# gets bundled: CPU or CUDA, see packaging/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${DIFFEDIT_VENV:-.venv}"
PY="$VENV/bin/python"
DIST="$ROOT/build/dist"
WORK="$ROOT/build/pyinstaller"
BUNDLE="$DIST/DiffEditStudio"

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: bash packaging/build.sh [--check]" >&2; exit 2 ;;
esac

if [ ! -x "$PY" ]; then
    echo "error: no virtual environment at $VENV; run 'python3 packaging/dev.py setup' first" >&2
    exit 2
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "installing PyInstaller into $VENV" >&2
    "$PY" -m pip --disable-pip-version-check -q install "pyinstaller>=6.10,<7"
fi

clean=()
[ "$check" = 1 ] && clean=(--clean)
start=$(date +%s)
"$PY" -m PyInstaller --noconfirm "${clean[@]}" --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/diffedit_studio.spec
seconds=$(( $(date +%s) - start ))
size_mb=$(du -sm "$BUNDLE" | cut -f1)
echo "bundle: $BUNDLE (${size_mb} MB), built in ${seconds} s"

# Run from an empty folder so nothing in the source tree can stand in for a missing resource.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
if [ "$check" = 1 ]; then
    # Only what a user's session would have: no PYTHONPATH, no venv, no project variables.
    env -i HOME="$scratch" PATH=/usr/bin:/bin LANG="${LANG:-C.UTF-8}" "$BUNDLE/diffedit-studio" --self-test
else
    "$BUNDLE/diffedit-studio" --self-test
fi
cd "$ROOT"
if [ "$check" = 1 ]; then
    printf '{"bundle": "%s", "size_mb": %s, "build_seconds": %s, "self_test": "passed"}\n' \
        "$BUNDLE" "$size_mb" "$seconds" > build/bundle-report.json
    echo "report: build/bundle-report.json"
fi
