#!/usr/bin/env bash
# The C++ core's tests under sanitizers.
#
#   tools/sanitize.sh [asan|tsan|all]        (default: all)
#
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer (with float-cast-overflow) and
#         LeakSanitizer (part of ASan on Linux), with libstdc++'s assertions on
#   tsan  ThreadSanitizer
#
# For each mode: builds csrc/core/*.cc, every csrc/tests/*_test.cc (one binary each) and the
# fake CUDA driver (tests/fakes/fake_cuda.c, which some tests load) with the mode's flags into
# build/sanitize/<mode>/ (only what changed since the last build), runs every test binary, and
# exits non-zero when a build fails, a test fails or a sanitizer reports anything.
#
# Environment: CXX and CC (default g++ and gcc: the sanitizer runtimes are gcc's),
# SANITIZE_JOBS (parallel compiles, default 2). Exit status 77 means the compiler cannot build
# or run the mode's sanitizer at all (a runtime is missing: the message names the package).
set -euo pipefail

# Internal: one compile of the parallel build (run by xargs): SRC OBJ, the command in
# $SANITIZE_COMPILE (relative paths without spaces, from the repository root).
if [[ "${1:-}" == "--compile-one" ]]; then
  read -r -a command <<< "$SANITIZE_COMPILE"
  exec "${command[@]}" -MMD -MP -c "$2" -o "$3"
fi

SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
MODE="${1:-all}"
case "$MODE" in
  asan | tsan) MODES=("$MODE") ;;
  all) MODES=(asan tsan) ;;
  -h | --help)
    sed -n '2,17p' "$SELF" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: tools/sanitize.sh [asan|tsan|all]" >&2
    exit 2
    ;;
esac
CXX="${CXX:-g++}"
CC="${CC:-gcc}"
JOBS="${SANITIZE_JOBS:-2}"

# What a sanitizer report looks like in a test's output (besides the exit status, which every
# mode makes non-zero on a report: ASan and UBSan abort, TSan exits 66).
REPORT='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer|ThreadSanitizer: reported|SUMMARY: UndefinedBehaviorSanitizer'

mode_flags() {
  case "$1" in
    # float-cast-overflow: a float converted to an integer it does not fit is undefined, and
    # gcc leaves it out of "undefined". _GLIBCXX_ASSERTIONS: bounds checks in std::vector and
    # friends, which ASan misses inside a container's spare capacity.
    asan) echo "-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -D_GLIBCXX_ASSERTIONS" ;;
    tsan) echo "-fsanitize=thread" ;;
  esac
}

# The Debian packages of each runtime, as gcc 12 (Debian 12) names them: the numbers follow
# gcc's version. libgcc-12-dev holds the link-time pieces of all of them.
runtime_packages() {
  case "$1" in
    asan) echo "libasan8 and libubsan1 (with libgcc-12-dev)" ;;
    tsan) echo "libtsan2 (with libgcc-12-dev)" ;;
  esac
}

# Runtime options. Each mode's defaults plus:
#   allocator_may_return_null=1: the core allocates with nothrow new and turns nullptr into a
#     Status (the pinned pool's heap fallback, AlignedBuffer); the sanitizers' allocators abort
#     on an impossible size by default, which would hide that path instead of checking it.
#   detect_stack_use_after_return, check_initialization_order: off by default, cheap here.
export ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export TSAN_OPTIONS="second_deadlock_stack=1:allocator_may_return_null=1:${TSAN_OPTIONS:-}"

# A program built and run with the mode's flags: exits 77 naming the package when that fails.
# Sets LAUNCH: empty, or setarch -R where TSan needs address randomization off (kernels with
# more mmap randomization than it supports say "unexpected memory mapping").
probe_runtime() {
  local mode="$1" out="$2" flags
  flags="$(mode_flags "$mode")"
  LAUNCH=()
  printf 'int main() { return 0; }\n' > "$out/probe.cc"
  # shellcheck disable=SC2086
  if ! "$CXX" $flags "$out/probe.cc" -o "$out/probe" 2> "$out/probe.log"; then
    echo "sanitize.sh: $CXX cannot build with $flags: install Debian's" \
      "$(runtime_packages "$mode"), or set CXX (and CC) to a compiler that has them:" >&2
    cat "$out/probe.log" >&2
    exit 77
  fi
  if ! "$out/probe" > "$out/probe.log" 2>&1; then
    if setarch "$(uname -m)" -R "$out/probe" > /dev/null 2>&1; then
      LAUNCH=(setarch "$(uname -m)" -R)
    else
      echo "sanitize.sh: a program built with $flags does not run here:" >&2
      cat "$out/probe.log" >&2
      exit 77
    fi
  fi
}

# True when obj is missing or older than its source or any header it included (its .d file).
stale() {
  local src="$1" obj="$2" dep
  [[ -f "$obj" && -f "${obj%.o}.d" && ! "$src" -nt "$obj" ]] || return 0
  for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "${obj%.o}.d"); do
    [[ "$dep" == *: ]] && continue
    [[ -e "$dep" && ! "$dep" -nt "$obj" ]] || return 0
  done
  return 1
}

build() {
  local mode="$1" out="$2" flags objects=() work=() src obj name core=()
  flags="$(mode_flags "$mode")"
  local compile="$CXX -std=c++17 -O1 -g -fno-omit-frame-pointer -pthread -Wall -Wextra -Icsrc $flags"
  # A change of compiler or flags rebuilds everything.
  if [[ ! -f "$out/command" || "$(cat "$out/command")" != "$compile" ]]; then
    rm -f "$out"/*.o "$out"/*.d
    echo "$compile" > "$out/command"
  fi
  for src in csrc/core/*.cc csrc/tests/*_test.cc; do
    name="${src#csrc/}"
    obj="$out/${name//\//_}"
    obj="${obj%.cc}.o"
    objects+=("$obj")
    if stale "$src" "$obj"; then work+=("$src" "$obj"); fi
  done
  if ((${#work[@]} > 0)); then
    echo "sanitize.sh: $mode: compiling $((${#work[@]} / 2)) files ($JOBS at a time)"
    if ! printf '%s\n' "${work[@]}" |
      SANITIZE_COMPILE="$compile" xargs -n 2 -P "$JOBS" bash "$SELF" --compile-one; then
      echo "sanitize.sh: $mode: compiling failed" >&2
      exit 1
    fi
  fi
  for obj in "${objects[@]}"; do
    [[ "$obj" == */core_* ]] && core+=("$obj")
  done
  for obj in "${objects[@]}"; do
    [[ "$obj" == */tests_*_test.o ]] || continue
    name="$(basename "${obj%.o}")"
    name="${name#tests_}"
    # shellcheck disable=SC2086
    "$CXX" $flags -pthread "$obj" "${core[@]}" -ldl -o "$out/$name"
  done
  # The fake driver runs inside the tests' processes: instrumented like them.
  if [[ ! -f "$out/libfake_cuda.so" || tests/fakes/fake_cuda.c -nt "$out/libfake_cuda.so" ||
    "$out/command" -nt "$out/libfake_cuda.so" ]]; then
    # shellcheck disable=SC2086
    "$CC" -shared -fPIC -O1 -g -fno-omit-frame-pointer -pthread $flags tests/fakes/fake_cuda.c \
      -o "$out/libfake_cuda.so"
  fi
}

# Runs every test binary of the mode; prints one line each, and the log of any that failed.
run_tests() {
  local mode="$1" out="$2" failed=0 binary name started rc summary
  for binary in "$out"/*_test; do
    name="$(basename "$binary")"
    started=$SECONDS
    rc=0
    PYSERVER_CUDA_DRIVER="$PWD/$out/libfake_cuda.so" "${LAUNCH[@]}" "$binary" \
      > "$out/$name.log" 2>&1 || rc=$?
    summary="$(grep -E '^[0-9]+ tests, [0-9]+ failed' "$out/$name.log" || echo "no summary")"
    if ((rc != 0)) || grep -qE "$REPORT" "$out/$name.log"; then
      echo "$mode $name: FAILED (exit $rc; $summary) in $((SECONDS - started)) s; its output:"
      cat "$out/$name.log"
      failed=1
    else
      echo "$mode $name: $summary in $((SECONDS - started)) s"
    fi
  done
  return "$failed"
}

status=0
for mode in "${MODES[@]}"; do
  out="build/sanitize/$mode"
  mkdir -p "$out"
  started=$SECONDS
  probe_runtime "$mode" "$out"
  build "$mode" "$out"
  echo "sanitize.sh: $mode: built in $((SECONDS - started)) s"
  started=$SECONDS
  if run_tests "$mode" "$out"; then
    echo "sanitize.sh: $mode: clean ($((SECONDS - started)) s)"
  else
    echo "sanitize.sh: $mode: FAILED" >&2
    status=1
  fi
done
exit "$status"
