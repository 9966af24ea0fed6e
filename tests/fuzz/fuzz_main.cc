// The main() of a fuzz target built without libFuzzer (the ordinary and the ASan builds, so the
// test suite runs every target): replays each input named on the command line (files, or
// directories of files: a seed corpus, or a crash file libFuzzer wrote), then runs --runs
// mutations of them, chosen by a seeded generator, so a run is the same on every machine.
// No coverage feedback: tools/fuzz.sh builds the same targets with clang's libFuzzer for that.
//
//   fuzz-NAME [--runs N] [--seed S] [--max-len BYTES] [PATH...]
//
// When an input crashes the target (a signal, or a sanitizer report), the input is printed on
// stderr in hex and, when FUZZ_CRASH_FILE is set, written to that file.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace {

// The input being run, for the crash report (read from a signal handler: plain globals).
const uint8_t* g_input = nullptr;
size_t g_input_size = 0;
const char* g_crash_file = nullptr;

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Async-signal-safe: write() only.
void report_input() {
  static const char kHex[] = "0123456789abcdef";
  char head[96];
  int n = snprintf(head, sizeof head, "\nfuzz: the input that crashed (%zu bytes, hex):\n", g_input_size);
  write_all(2, head, static_cast<size_t>(n));
  char line[129];
  for (size_t i = 0; i < g_input_size;) {
    size_t k = 0;
    for (; k < 128 && i < g_input_size; k += 2, i++) {
      line[k] = kHex[g_input[i] >> 4];
      line[k + 1] = kHex[g_input[i] & 15];
    }
    line[k++] = '\n';
    write_all(2, line, k);
  }
  if (g_crash_file != nullptr) {
    int fd = open(g_crash_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      write_all(fd, reinterpret_cast<const char*>(g_input), g_input_size);
      close(fd);
    }
  }
}

void on_fatal_signal(int sig) {
  report_input();
  signal(sig, SIG_DFL);
  raise(sig);
}

struct Rng {
  uint64_t s;
  uint64_t next() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
};

void read_inputs(const std::string& path, std::vector<std::string>* out) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    fprintf(stderr, "fuzz: %s: %s\n", path.c_str(), strerror(errno));
    exit(2);
  }
  if (S_ISDIR(st.st_mode)) {
    DIR* d = opendir(path.c_str());
    if (d == nullptr) return;
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());  // readdir's order differs between file systems
    for (const std::string& n : names) read_inputs(path + "/" + n, out);
    return;
  }
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return;
  std::string data;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
  fclose(f);
  out->push_back(std::move(data));
}

// Values that sit on the edges parsers check: lengths, signs, separators.
constexpr uint8_t kBytes[] = {0, 1, 0x7f, 0x80, 0xff, '\r', '\n', ':', ';', '-', '"', '\\', '{', '}', '[', ']', ',',
                              ' ', '\t', '0', '9', 'a', 'F', '/', '.', '%', '=', '&', '?'};
constexpr uint32_t kWords[] = {0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff,
                               0x80000000, 0xfffffffe, 0xffffffff, 20, 4096, 256u << 10, 8u << 20};

void mutate(std::string* in, const std::vector<std::string>& pool, size_t max_len, Rng& r) {
  int ops = 1 + static_cast<int>(r.below(4));
  for (int i = 0; i < ops; i++) {
    size_t n = in->size();
    switch (r.below(9)) {
      case 0:  // flip a bit
        if (n) (*in)[r.below(n)] ^= static_cast<char>(1u << r.below(8));
        break;
      case 1:  // a random byte
        if (n) (*in)[r.below(n)] = static_cast<char>(r.next());
        break;
      case 2:  // an edge byte
        if (n) (*in)[r.below(n)] = static_cast<char>(kBytes[r.below(sizeof kBytes)]);
        break;
      case 3: {  // insert a few random or edge bytes
        size_t k = 1 + r.below(8);
        std::string ins;
        for (size_t j = 0; j < k; j++)
          ins.push_back(static_cast<char>(r.below(2) ? r.next() : kBytes[r.below(sizeof kBytes)]));
        in->insert(r.below(n + 1), ins);
        break;
      }
      case 4:  // erase a range
        if (n) {
          size_t at = r.below(n);
          in->erase(at, 1 + r.below(std::min<size_t>(n - at, 16)));
        }
        break;
      case 5:  // copy a range elsewhere
        if (n) {
          size_t at = r.below(n), len = 1 + r.below(std::min<size_t>(n - at, 64));
          std::string piece = in->substr(at, len);
          in->insert(r.below(n + 1), piece);
        }
        break;
      case 6:  // splice with another input
        if (!pool.empty()) {
          const std::string& o = pool[r.below(pool.size())];
          size_t cut = r.below(n + 1), from = r.below(o.size() + 1);
          *in = in->substr(0, cut) + o.substr(from);
        }
        break;
      case 7:  // an edge 32-bit value, little- or big-endian
        if (n >= 4) {
          uint32_t v = kWords[r.below(sizeof kWords / sizeof kWords[0])];
          size_t at = r.below(n - 3);
          bool big = r.below(2);
          for (int b = 0; b < 4; b++) (*in)[at + b] = static_cast<char>(v >> (8 * (big ? 3 - b : b)));
        }
        break;
      default:  // truncate
        if (n) in->resize(r.below(n));
        break;
    }
  }
  if (in->size() > max_len) in->resize(max_len);
}

void run(const std::string& input) {
  // A copy of exactly the input's size, so a read past its end is caught by ASan.
  uint8_t* p = static_cast<uint8_t*>(malloc(input.size() ? input.size() : 1));
  memcpy(p, input.data(), input.size());
  g_input = p;
  g_input_size = input.size();
  LLVMFuzzerTestOneInput(p, input.size());
  g_input = nullptr;
  g_input_size = 0;
  free(p);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t runs = 10000, seed = 1;
  size_t max_len = 4096;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "--runs" || a == "--seed" || a == "--max-len") && i + 1 < argc) {
      char* end = nullptr;
      unsigned long long v = strtoull(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0') {
        fprintf(stderr, "fuzz: %s: not a number: %s\n", a.c_str(), argv[i]);
        return 2;
      }
      if (a == "--runs") runs = v;
      if (a == "--seed") seed = v ? v : 1;
      if (a == "--max-len") max_len = static_cast<size_t>(v);
    } else if (a.rfind("--", 0) == 0) {
      fprintf(stderr, "usage: %s [--runs N] [--seed S] [--max-len BYTES] [PATH...]\n", argv[0]);
      return 2;
    } else {
      read_inputs(a, &inputs);
    }
  }
  g_crash_file = getenv("FUZZ_CRASH_FILE");
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) signal(sig, on_fatal_signal);
  if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(report_input);

  for (const std::string& in : inputs) run(in);
  run(std::string());
  // Mutants join the pool now and then, so that mutations add up over a run.
  std::vector<std::string> pool = inputs;
  if (pool.empty()) pool.emplace_back();
  Rng r{seed * 0x9E3779B97F4A7C15ull};
  for (uint64_t i = 0; i < runs; i++) {
    std::string in = pool[r.below(pool.size())];
    mutate(&in, pool, max_len, r);
    run(in);
    if (r.below(8) == 0) {
      if (pool.size() < 512) {
        pool.push_back(std::move(in));
      } else if (pool.size() > inputs.size()) {  // replace a mutant, never a seed
        pool[inputs.size() + r.below(pool.size() - inputs.size())] = std::move(in);
      }
    }
  }
  fprintf(stderr, "fuzz: %zu inputs replayed, %llu mutations run (seed %llu), no crash\n", inputs.size(),
          static_cast<unsigned long long>(runs), static_cast<unsigned long long>(seed));
  return 0;
}
