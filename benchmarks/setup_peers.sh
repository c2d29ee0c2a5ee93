#!/usr/bin/env bash
# Install the benchmark peers in their own venvs under .peers/ (never in the project's .venv:
# their pins conflict with current transformers). Idempotent: a peer whose .peers/<name>/.ready
# stamp exists is skipped; a half-finished one is rebuilt from scratch.
#
#   bash benchmarks/setup_peers.sh            # all peers
#   bash benchmarks/setup_peers.sh pyreft     # one of: pyreft tl nnsight
#
# Recipes follow ../shared/peers/README.md; the traps they avoid are noted inline. pip runs with
# -qq: the machine's extra local indexes print a warning per package otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/.peers"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
mkdir -p "$PEERS"

fresh_venv() {  # $1 = name; a venv without a .ready stamp may be half-installed: start over
    rm -rf "$PEERS/$1"
    "$PYTHON" -m venv "$PEERS/$1"
    "$PEERS/$1/bin/python" -m pip install -qq --upgrade pip
}

stamp() {  # $1 = name, $2 = python; the stamp records what was installed
    "$2" -m pip freeze > "$PEERS/$1/.ready"
    echo "[setup_peers] $1 ready ($PEERS/$1/.ready)"
}

setup_pyreft() {
    local P="$PEERS/pyreft/bin/python"
    fresh_venv pyreft
    # Torch first, pinned: pyreft's own requirements would pull torch 2.14 with CUDA wheels.
    "$P" -m pip install -qq "$TORCH_PIN"
    printf "torch==2.13.0\ntorchvision==0.28.0\nhuggingface-hub<1.0\n" > "$PEERS/constraints.txt"
    # transformers 4.45.1: pyreft 0.1.0's ReftTrainer crashes on >= 4.46 (num_items_in_batch).
    "$P" -m pip install -qq -c "$PEERS/constraints.txt" pyvene==0.1.8 transformers==4.45.1 datasets accelerate
    # --no-deps: with torch pinned, resolving pyreft's requirements backtracks for many minutes.
    "$P" -m pip download -qq --no-deps pyreft==0.1.0 -d "$PEERS/dl"
    "$P" -m pip install -qq --no-deps "$PEERS/dl/pyreft-0.1.0-py3-none-any.whl"
    "$P" -c "import pyreft, pyvene; print('pyreft', pyreft.__file__)"
    stamp pyreft "$P"
}

setup_tl() {
    local P="$PEERS/tl/bin/python"
    fresh_venv tl
    "$P" -m pip install -qq "$TORCH_PIN"
    # Constrain only torch: pinning more (transformers, numpy) makes the resolver backtrack
    # for many minutes. >=4.3 is the first release with TransformerBridge (_tl_sweep.py uses it).
    printf "torch==2.13.0\n" > "$PEERS/tl-constraints.txt"
    "$P" -m pip install -qq -c "$PEERS/tl-constraints.txt" "transformer-lens>=4.3"
    "$P" -c "from transformer_lens.model_bridge import TransformerBridge; from transformer_lens.patching import get_act_patch_resid_pre; print('TransformerBridge ok')"
    stamp tl "$P"
}

setup_nnsight() {
    # nnsight installs with current transformers, so it lives in the project's .venv (the
    # sweep benchmark runs it in-process); the stamp only records that it imports.
    local P="$ROOT/.venv/bin/python"
    if ! "$P" -c "import nnsight" 2>/dev/null; then
        "$P" -m pip install -qq "nnsight>=0.8"
    fi
    "$P" -c "import nnsight; print('nnsight', nnsight.__version__)"
    mkdir -p "$PEERS/nnsight"
    "$P" -m pip freeze | grep -i '^nnsight' > "$PEERS/nnsight/.ready"
    echo "[setup_peers] nnsight ready ($PEERS/nnsight/.ready)"
}

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(nnsight pyreft tl)
status=0
for name in "${names[@]}"; do
    case "$name" in
        pyreft|tl|nnsight) ;;
        *) echo "[setup_peers] unknown peer '$name': valid are pyreft, tl, nnsight" >&2; exit 2 ;;
    esac
    if [ -f "$PEERS/$name/.ready" ]; then
        echo "[setup_peers] $name already set up (remove $PEERS/$name to reinstall)"
        continue
    fi
    echo "[setup_peers] installing $name ..."
    # One failing peer must not block the others: benchmarks record a missing peer as a note.
    if ! "setup_$name"; then
        echo "[setup_peers] $name FAILED; benchmarks will report it as missing" >&2
        status=1
    fi
done
exit $status
