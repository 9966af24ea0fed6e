// Tests for api/router: literal and parameter segments, rest parameters, 404 versus 405.
#include "api/router.h"

#include <doctest/doctest.h>

namespace sp::api {
namespace {

Router make() {
  Router r;
  r.add(HTTP_GET, "/healthz", 1);
  r.add(HTTP_POST, "/pools/{pool}/code/execute", 2);
  r.add(HTTP_GET, "/pools/{pool}/files/content/{name...}", 3);
  r.add(HTTP_GET, "/pools/{pool}/files/{name}", 4);
  r.add(HTTP_DELETE, "/pools/{pool}/files/{name}", 5);
  return r;
}

TEST_CASE("literal and parameter routes") {
  Router r = make();
  Match m = r.match(HTTP_GET, "/healthz");
  CHECK(m.kind == MatchKind::kFound);
  CHECK(m.id == 1);
  m = r.match(HTTP_POST, "/pools/p1/code/execute");
  REQUIRE(m.kind == MatchKind::kFound);
  CHECK(m.id == 2);
  CHECK(m.params.count == 1);
  CHECK(m.params.values[0] == "p1");
  m = r.match(HTTP_GET, "/pools/p1/files/content/a/b/c.txt");
  REQUIRE(m.kind == MatchKind::kFound);
  CHECK(m.id == 3);
  CHECK(m.params.values[1] == "a/b/c.txt");
  m = r.match(HTTP_DELETE, "/pools/p1/files/a%2Fb");
  CHECK(m.id == 5);
  CHECK(m.params.values[1] == "a%2Fb");
}

TEST_CASE("HEAD follows GET") {
  Router r = make();
  CHECK(r.match(HTTP_HEAD, "/healthz").id == 1);
}

TEST_CASE("no match is 404, a path with other methods is 405 with Allow") {
  Router r = make();
  CHECK(r.match(HTTP_GET, "/nope").kind == MatchKind::kNotFound);
  CHECK(r.match(HTTP_GET, "/healthz/").kind == MatchKind::kNotFound);
  CHECK(r.match(HTTP_GET, "/pools//code/execute").kind == MatchKind::kNotFound);
  CHECK(r.match(HTTP_GET, "/pools/p/files/content/").kind == MatchKind::kNotFound);
  CHECK(r.match(HTTP_GET, "/pools/p/files/content").id == 4);  // a file named "content"
  CHECK(r.match(HTTP_GET, "").kind == MatchKind::kNotFound);
  Match m = r.match(HTTP_POST, "/healthz");
  CHECK(m.kind == MatchKind::kMethodNotAllowed);
  CHECK(m.allow == "GET, HEAD");
  m = r.match(HTTP_PUT, "/pools/p/files/x");
  CHECK(m.kind == MatchKind::kMethodNotAllowed);
  CHECK(m.allow == "GET, HEAD, DELETE");
}

}  // namespace
}  // namespace sp::api
