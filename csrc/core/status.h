// Status: how every error travels inside the core.
//
// The C++ core never throws across threads: functions that can fail return a Status, and a
// request's failure reaches Python as a completion carrying the code and the message. The Python
// side maps each code to an exception class in one place (pyserver.errors.from_core_status), the
// bindings do the same for setup errors (ThrowIfError).
#pragma once

#include <string>
#include <utility>

namespace pyserver {
namespace core {

// The one table of status codes: the bindings export it as pyserver._core.STATUS_CODES (name ->
// number; pyserver.completions.StatusCode is made from it), and pyserver/errors.py maps each
// code's name to its exception class.
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kUnavailable = 3,
  kInternal = 4,
  kDeadlineExceeded = 5,
  kCancelled = 6,
  kUnsupported = 7,
  kResourceExhausted = 8,  // a queue is full
};

class Status {
 public:
  // The default Status is OK and carries no message (no allocation).
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string message) {
    return Status(StatusCode::kInvalidArgument, std::move(message));
  }
  static Status Unavailable(std::string message) {
    return Status(StatusCode::kUnavailable, std::move(message));
  }
  static Status ResourceExhausted(std::string message) {
    return Status(StatusCode::kResourceExhausted, std::move(message));
  }
  static Status Internal(std::string message) {
    return Status(StatusCode::kInternal, std::move(message));
  }
  static Status DeadlineExceeded(std::string message) {
    return Status(StatusCode::kDeadlineExceeded, std::move(message));
  }
  static Status Cancelled(std::string message) {
    return Status(StatusCode::kCancelled, std::move(message));
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace core
}  // namespace pyserver
