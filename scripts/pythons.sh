# Sourced by .ci/run and scripts/check_dist.sh: where each supported CPython is.
#
# python_for X.Y prints the path of a CPython X.Y interpreter: $OMNIQ_FAST_PYTHON_X_Y if set,
# else pythonX.Y on PATH, else the newest pyenv build of X.Y (how the CI machines have them),
# the first of these that runs and is X.Y (a pyenv shim on PATH may be neither). It fails,
# naming the version, when there is none: a CI leg must not quietly run on another Python.

# The CPython minor versions CI runs the suite on and check_dist builds a wheel for;
# OMNIQ_FAST_CI_PYTHONS="3.11" (say) narrows check_dist to the ones a machine has.
read -ra CI_PYTHONS <<<"${OMNIQ_FAST_CI_PYTHONS:-3.10 3.11 3.12 3.13}"

python_for() {
  local version=$1 var root candidate
  var=OMNIQ_FAST_PYTHON_${version//./_}
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  # sort -V: 3.10.13 after 3.10.9. Free-threaded builds (3.13.0t) do not match the glob.
  for candidate in "${!var:-}" "$(command -v "python$version" || true)" \
    "$(ls -d "$root"/versions/"$version".*[0-9]/bin/python 2>/dev/null | sort -V | tail -1)"; do
    if [ -n "$candidate" ] && "$candidate" -c \
      "import platform, sys; assert platform.python_implementation() == 'CPython' and sys.version.startswith('$version.')" \
      2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "no CPython $version: install it (pyenv install $version) or set $var" >&2
  return 1
}
