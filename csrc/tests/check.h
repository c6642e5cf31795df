// check.h: a tiny header-only test harness for the core's C++ tests.
//
// There is no gtest on the machines this builds on, and the tests need very little: register a
// test by name, check conditions, print one line per test, run a subset by name. Usage:
//
//   TEST_CASE(BatchesSplitAtMaxBatchSize) {
//     CHECK_EQ(batches.size(), size_t{2});
//   }
//   int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
//
// A failed check throws CheckFailure, which ends the test: its destructors run (a test's
// fixtures release blocked engines and stop schedulers in theirs), then the runner reports the
// first failure and goes on with the next test. So checks belong on the test's own thread only;
// an exception on a worker thread would terminate the process.
//
// The binary takes `--list` (print the test names, one a line) or test names to run (all when
// none). Each test is watched by an alarm: a test that hangs (a lost wake-up, a deadlock) prints
// TIMEOUT after its name and the process exits non-zero, instead of hanging its caller.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

namespace pyserver {
namespace testing {

// Where a check was written. Helpers that check on behalf of a test take one as a defaulted
// argument, PYSERVER_CALLER, so a failure points at the test's line rather than the helper's.
struct Location {
  const char* file;
  int line;

  // __builtin_FILE/__builtin_LINE as default arguments give the location of the call (GCC,
  // Clang; C++17 has no std::source_location). They must be default arguments themselves: in a
  // braced initializer they give the line of the declaration.
  static Location Caller(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return Location{file, line};
  }
};

#define PYSERVER_CALLER ::pyserver::testing::Location::Caller()

struct CheckFailure {
  std::string where;  // "file:line"
  std::string what;   // the failed expression and, for comparisons, the values
};

[[noreturn]] inline void Fail(Location at, const std::string& what) {
  const char* slash = std::strrchr(at.file, '/');
  throw CheckFailure{std::string(slash != nullptr ? slash + 1 : at.file) + ":" +
                         std::to_string(at.line),
                     what};
}

// Values in failure messages. Types without operator<< need one found by ADL (the tests define
// one for StatusCode); vectors print as [a, b, c].
template <typename T>
std::string Describe(const T& value) {
  std::ostringstream out;
  out << value;
  return out.str();
}
inline std::string Describe(const std::string& value) { return "\"" + value + "\""; }
template <typename T>
std::string Describe(const std::vector<T>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += Describe(values[i]);
  }
  return out + "]";
}

#define CHECK_AT(where, condition)                                                                 \
  do {                                                                                             \
    if (!(condition)) ::pyserver::testing::Fail((where), "CHECK(" #condition ")");                 \
  } while (0)

#define CHECK_MSG_AT(where, condition, message)                                                    \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      std::ostringstream check_message_;                                                           \
      check_message_ << "CHECK(" #condition "): " << message;                                      \
      ::pyserver::testing::Fail((where), check_message_.str());                                    \
    }                                                                                              \
  } while (0)

// Each operand is evaluated once, into a copy: a reference into a temporary (`f()[0].ids`) would
// dangle by the comparison. Both sides are compared with ==, so give literals the type of the
// other side (size_t{2} for a size_t) to keep -Wsign-compare quiet.
#define CHECK_EQ_AT(where, a, b)                                                                   \
  do {                                                                                             \
    const auto check_a_ = (a);                                                                     \
    const auto check_b_ = (b);                                                                     \
    if (!(check_a_ == check_b_)) {                                                                 \
      ::pyserver::testing::Fail((where), "CHECK_EQ(" #a ", " #b "): " +                            \
                                             ::pyserver::testing::Describe(check_a_) +             \
                                             " vs " + ::pyserver::testing::Describe(check_b_));    \
    }                                                                                              \
  } while (0)

#define PYSERVER_HERE ::pyserver::testing::Location{__FILE__, __LINE__}
#define CHECK(condition) CHECK_AT(PYSERVER_HERE, condition)
#define CHECK_MSG(condition, message) CHECK_MSG_AT(PYSERVER_HERE, condition, message)
#define CHECK_EQ(a, b) CHECK_EQ_AT(PYSERVER_HERE, a, b)
// `text` (a std::string) contains `needle`.
#define CHECK_CONTAINS(text, needle)                                                               \
  do {                                                                                             \
    const std::string check_text_ = (text);                                                        \
    if (check_text_.find(needle) == std::string::npos) {                                           \
      ::pyserver::testing::Fail(PYSERVER_HERE, "CHECK_CONTAINS(" #text ", " #needle "): " +        \
                                                   ::pyserver::testing::Describe(check_text_));    \
    }                                                                                              \
  } while (0)

struct TestCase {
  const char* name;
  void (*body)();
};

inline std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;  // in definition order: the order they run in
  return tests;
}

struct Registrar {
  Registrar(const char* name, void (*body)()) { Registry().push_back({name, body}); }
};

#define TEST_CASE(Name)                                                                            \
  static void Name##Body();                                                                        \
  static const ::pyserver::testing::Registrar Name##Registrar(#Name, &Name##Body);                 \
  static void Name##Body()

// Seconds a single test may take before the watchdog ends the process.
constexpr unsigned kTestTimeoutS = 60;

inline void OnWatchdog(int) {
  // Async-signal-safe only: write and _exit.
  static const char kMessage[] = "TIMEOUT (the test hung; the watchdog ended it)\n";
  ssize_t ignored = write(STDOUT_FILENO, kMessage, sizeof(kMessage) - 1);
  (void)ignored;
  _exit(3);
}

// Runs the selected tests; 0 when all passed, 1 when one failed, 2 on bad arguments.
inline int RunTests(int argc, char** argv) {
  std::vector<const TestCase*> selected;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--list") {
      for (const TestCase& test : Registry()) std::printf("%s\n", test.name);
      return 0;
    }
    const TestCase* found = nullptr;
    for (const TestCase& test : Registry()) {
      if (arg == test.name) found = &test;
    }
    if (found == nullptr) {
      std::fprintf(stderr, "unknown test '%s' (--list shows them)\n", arg.c_str());
      return 2;
    }
    selected.push_back(found);
  }
  if (selected.empty()) {
    for (const TestCase& test : Registry()) selected.push_back(&test);
  }

  signal(SIGALRM, OnWatchdog);
  int failed = 0;
  for (const TestCase* test : selected) {
    // The name goes out before the test runs, so a watchdog TIMEOUT follows the right name.
    std::printf("%s ... ", test->name);
    std::fflush(stdout);
    alarm(kTestTimeoutS);
    std::string failure;
    try {
      test->body();
    } catch (const CheckFailure& f) {
      failure = f.where + ": " + f.what;
    } catch (const std::exception& e) {
      failure = std::string("uncaught exception: ") + e.what();
    }
    alarm(0);
    if (failure.empty()) {
      std::printf("ok\n");
    } else {
      std::printf("FAILED %s\n", failure.c_str());
      ++failed;
    }
    std::fflush(stdout);
  }
  std::printf("%zu tests, %d failed\n", selected.size(), failed);
  // Out now: a leak checker that runs at exit and fails the process skips stdio's flush.
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

}  // namespace testing
}  // namespace pyserver
