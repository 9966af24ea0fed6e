// Runs the interpreter once to list its installed distributions.
#include "pool/metadata.h"

#include <cstdio>

#include "util/log.h"

namespace sp::pool {
namespace {

// Prints the whole metadata document; stdlib only, no site customisation needed.
constexpr const char* kScript =
    "import importlib.metadata as m, json, sys\n"
    "seen = {}\n"
    "for d in m.distributions():\n"
    "    n = d.metadata.get('Name')\n"
    "    if n and n.lower() not in seen: seen[n.lower()] = (n, d.version)\n"
    "pk = [{'name': n, 'version': v} for n, v in sorted(seen.values(), key=lambda t: t[0].lower())]\n"
    "print(json.dumps({'runtimes': [{'name': 'python', 'version': sys.version.split()[0]}],\n"
    "                  'preInstalledPackages': pk, 'language': 'Python', 'sandbox': 'sandpool'}))\n";

}  // namespace

std::string collect_metadata_json(const std::string& python) {
  std::string cmd = python + " -I -c \"$SANDPOOL_METADATA_SCRIPT\" 2>/dev/null";
  setenv("SANDPOOL_METADATA_SCRIPT", kScript, 1);
  FILE* f = popen(cmd.c_str(), "r");
  unsetenv("SANDPOOL_METADATA_SCRIPT");
  std::string out;
  if (f) {
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    int rc = pclose(f);
    if (rc != 0) out.clear();
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out.empty() || out.front() != '{') {
    LOG_WARN("metadata: could not list the packages of %s", python.c_str());
    return R"({"runtimes":[],"preInstalledPackages":[],"language":"Python","sandbox":"sandpool"})";
  }
  return out;
}

}  // namespace sp::pool
