// Tests for util/result.h and util/unique_fd.h.
#include <doctest/doctest.h>
#include <fcntl.h>

#include "util/result.h"
#include "util/unique_fd.h"

namespace sp {
namespace {

Result<int> parse_positive(int x) {
  if (x <= 0) return Error{kEInvalid, "parse_positive"};
  return x;
}

Result<int> doubled(int x) {
  SP_TRY_ASSIGN(int v, parse_positive(x));
  return v * 2;
}

Status check(int x) {
  SP_TRY(parse_positive(x));
  return {};
}

TEST_CASE("Result carries a value or an error") {
  CHECK(doubled(4).value() == 8);
  auto r = doubled(-1);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == kEInvalid);
  CHECK(std::string(r.error().where) == "parse_positive");
  CHECK(r.error().message() == "parse_positive: invalid input");
  CHECK(check(1).ok());
  CHECK_FALSE(check(0).ok());
}

TEST_CASE("errno errors format with strerror") {
  Error e{ENOENT, "open config"};
  CHECK(e.message() == "open config: No such file or directory");
}

TEST_CASE("UniqueFd closes once and transfers ownership") {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(raw >= 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    CHECK_FALSE(a.valid());
    CHECK(b.get() == raw);
  }
  CHECK(::fcntl(raw, F_GETFD) == -1);
  CHECK(errno == EBADF);
}

}  // namespace
}  // namespace sp
