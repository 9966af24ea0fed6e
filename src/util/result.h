// Result<T>: the error-or-value type every fallible function in src/ returns; not an exception mechanism.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace sp {

// An error: an errno-style code plus a static description of the step that failed.
// `where` must point at a string literal (or other storage that outlives the error).
struct Error {
  int code = 0;              // errno value, or one of the kE* codes below
  const char* where = "";  // e.g. "pivot_root", "parse request line"

  std::string message() const;
};

// Codes outside the errno range for failures that have no errno.
inline constexpr int kEInvalid = 10001;    // malformed input
inline constexpr int kETooLarge = 10002;   // input over a limit
inline constexpr int kEProtocol = 10003;   // peer broke a protocol
inline constexpr int kENotFound = 10004;

inline Error errno_error(const char* where) { return Error{errno, where}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}   // NOLINT: implicit by design
  Result(Error error) : v_(error) {}          // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(error), ok_(false) {}  // NOLINT: implicit by design
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{};
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace sp

// Propagates an error from an expression returning Result<...>; evaluates to nothing.
#define SP_TRY(expr)                                   \
  do {                                                 \
    auto sp_try_r_ = (expr);                           \
    if (!sp_try_r_.ok()) return sp_try_r_.error();     \
  } while (0)

// Assigns the value of a Result<T> expression to `lhs`, or returns its error.
#define SP_TRY_ASSIGN(lhs, expr)                       \
  auto SP_CONCAT_(sp_try_v_, __LINE__) = (expr);       \
  if (!SP_CONCAT_(sp_try_v_, __LINE__).ok())           \
    return SP_CONCAT_(sp_try_v_, __LINE__).error();    \
  lhs = std::move(SP_CONCAT_(sp_try_v_, __LINE__)).value()
#define SP_CONCAT_(a, b) SP_CONCAT2_(a, b)
#define SP_CONCAT2_(a, b) a##b
