// The agent's supervisor (see supervisor.h and PROTOCOL.md §3): forks workers, enforces deadlines,
// answers for a worker that died in a cell, and restarts it.
#include "agent/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "agent/protocol.h"

// Python's fork bookkeeping, exported by the interpreter that loaded us.
extern "C" void PyOS_BeforeFork(void);
extern "C" void PyOS_AfterFork_Parent(void);
extern "C" void PyOS_AfterFork_Child(void);
extern "C" int PyErr_CheckSignals(void);

namespace {

using sp::agent::ExecStatus;

// The shared page in 8-byte words (sandpool_agent.py: SHARED, WORKER_PART, OUTPUT_PART). The worker
// writes all but kArmed, the time the supervisor will next wake up on its own.
enum Word : int {
  kSeq = 0,        // cells begun by this worker
  kRunning = 1,    // kRunIdle, kRunCell, kRunReplying
  kRequestId = 2,  // of the cell
  kDeadline = 3,   // CLOCK_MONOTONIC ns
  kStart = 4,      // CLOCK_MONOTONIC ns
  kArmed = 5,
  kLimit = 6,  // output bytes per stream
  kOutBase = 7,  // where the cell's stdout and stderr begin in the capture files
  kErrBase = 8,
  kWords = 9,
};
constexpr uint64_t kRunIdle = 0, kRunCell = 1;

constexpr int64_t kIdleWakeNs = 60'000'000'000;  // bounds how late a missed nudge is seen
constexpr int kQuickDeathsToGiveUp = 5;           // in a row, each before running any cell
constexpr int kExitEof = 0, kExitProtocol = 3, kExitGaveUp = 4;
constexpr uint32_t kReasonTimeout = 1, kReasonCrashed = 2, kReasonOutOfMemory = 3;
constexpr uint64_t kMaxOutputBytes = 1 << 20;  // per stream: sandpool_agent.MAX_OUTPUT_BYTES

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The worker is Python, which has no memory fences: x86 keeps stores in order, and kIdleWakeNs
// bounds the rare interleaving where both sides miss each other.
uint64_t load(const uint64_t* page, Word w) { return __atomic_load_n(&page[w], __ATOMIC_ACQUIRE); }
void store(uint64_t* page, Word w, uint64_t v) { __atomic_store_n(&page[w], v, __ATOMIC_SEQ_CST); }

int thread_count() {
  // /proc/self/stat: "pid (comm) state ..." with num_threads the 18th field after the comm.
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  char* p = strrchr(buf, ')');
  for (int field = 0; p && field < 18; ++field) p = strchr(p + 1, ' ');
  return p ? atoi(p + 1) : -1;
}

// (data cut to `limit` bytes, never inside a UTF-8 sequence), as sandpool_agent.clip: true when cut.
bool clip(std::string* data, uint64_t limit) {
  if (limit == 0 || data->size() <= limit) return false;
  size_t cut = limit;
  for (int i = 0; i < 3 && cut > 0 && (static_cast<unsigned char>((*data)[cut]) & 0xC0) == 0x80; ++i) --cut;
  data->resize(cut);
  return true;
}

// The cell's bytes of capture file `fd` from `base` on, cut to `limit`: true when cut.
bool take_capture(int fd, uint64_t base, uint64_t limit, std::string* out) {
  out->clear();
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) <= base) return false;
  uint64_t want = static_cast<uint64_t>(st.st_size) - base;
  if (want > limit + 4) want = limit + 4;
  out->resize(want);
  ssize_t got = pread(fd, out->data(), want, static_cast<off_t>(base));
  out->resize(got > 0 ? static_cast<size_t>(got) : 0);
  return clip(out, limit);
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

class Supervisor {
 public:
  Supervisor(int sock, uint32_t grace_ms) : sock_(sock), grace_ns_(int64_t{grace_ms} * 1'000'000) {}

  // Everything a worker needs, made once; -errno on failure (the caller then exits).
  int setup(sp_agent_worker* w);
  // The loop: forks workers until the agent ends. Returns 0 in each worker (`w` filled in); in
  // the supervisor it ends the process.
  int run(sp_agent_worker* w);

 private:
  int fork_worker(uint32_t restarts, uint32_t reason, sp_agent_worker* w);
  int watch(pid_t pid, bool* killed);  // the worker's wait status
  bool reap(pid_t worker, int* status);
  uint32_t answer_for_dead_worker(int status, bool killed);  // the restart reason
  [[noreturn]] void exit_now(int code, pid_t worker);
  void log(const char* text) {
    ssize_t n = write(log_fd_, text, strlen(text));
    (void)n;
  }

  int sock_;
  int64_t grace_ns_;
  uint64_t* page_ = nullptr;
  int nudge_r_ = -1, nudge_w_ = -1, out_fd_ = -1, err_fd_ = -1, log_fd_ = -1, signal_fd_ = -1;
  sigset_t caller_mask_;  // the workers get it back
};

int Supervisor::setup(sp_agent_worker* w) {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return -errno;
  page_ = static_cast<uint64_t*>(page);
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
  nudge_r_ = fds[0];
  nudge_w_ = fds[1];
  out_fd_ = memfd_create("sandpool-stdout", MFD_CLOEXEC);
  err_fd_ = memfd_create("sandpool-stderr", MFD_CLOEXEC);
  if (out_fd_ < 0 || err_fd_ < 0) return -errno;
  // Agent diagnostics go where our stderr went before the worker took fd 2.
  log_fd_ = fcntl(2, F_DUPFD_CLOEXEC, 3);
  if (log_fd_ < 0) log_fd_ = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (log_fd_ < 0) return -errno;
  // SIGCHLD (our worker, and in a sandbox every orphan: we are pid 1 there) and SIGTERM come
  // through a descriptor; the workers get the caller's mask back.
  sigset_t mine;
  sigemptyset(&mine);
  sigaddset(&mine, SIGCHLD);
  sigaddset(&mine, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mine, &caller_mask_) != 0) return -errno;
  signal_fd_ = signalfd(-1, &mine, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd_ < 0) return -errno;
  // Outside a pid namespace too, orphans of the session come to us.
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  w->shared_addr = reinterpret_cast<uint64_t>(page_);
  return 0;
}

int Supervisor::fork_worker(uint32_t restarts, uint32_t reason, sp_agent_worker* w) {
  for (int i = 0; i < kWords; ++i) store(page_, static_cast<Word>(i), 0);
  for (int attempt = 0;; ++attempt) {
    int pid = sp_agent_fork();
    if (pid == 0) {
      close(nudge_r_);
      close(signal_fd_);
      sigprocmask(SIG_SETMASK, &caller_mask_, nullptr);
      *w = sp_agent_worker{reinterpret_cast<uint64_t>(page_), nudge_w_, out_fd_, err_fd_, log_fd_, restarts, reason};
      return 0;
    }
    if (pid > 0) return pid;
    if (attempt == 50) {  // 5 s of EAGAIN (the pids limit) or ENOMEM
      log("sandpool agent: cannot fork a worker; giving up\n");
      exit_now(kExitGaveUp, -1);
    }
    usleep(100'000);
  }
}

bool Supervisor::reap(pid_t worker, int* status) {
  signalfd_siginfo si[8];
  bool term = false;
  for (;;) {
    ssize_t n = read(signal_fd_, si, sizeof si);
    if (n <= 0) break;
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof si[0]; ++i) term |= si[i].ssi_signo == SIGTERM;
  }
  if (term) exit_now(0, worker);
  bool found = false;
  for (;;) {
    int st = 0;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) break;
    if (pid == worker) {
      *status = st;
      found = true;
    }
  }
  return found;
}

int Supervisor::watch(pid_t pid, bool* killed) {
  uint64_t cur_seq = ~uint64_t{0};
  int64_t hard_ns = -1;
  *killed = false;
  for (;;) {
    uint64_t seq = load(page_, kSeq), running = load(page_, kRunning);
    int64_t deadline = static_cast<int64_t>(load(page_, kDeadline));
    int64_t now = now_ns(), wake = now + kIdleWakeNs;
    if (running == kRunCell && !*killed) {
      if (seq != cur_seq) {
        cur_seq = seq;
        hard_ns = -1;
      }
      if (hard_ns < 0 && now >= deadline) {
        kill(pid, SIGINT);  // KeyboardInterrupt in the cell
        hard_ns = now + grace_ns_;
      }
      if (hard_ns >= 0 && now >= hard_ns) {
        kill(pid, SIGKILL);  // it did not stop: restart
        *killed = true;
      } else {
        wake = hard_ns >= 0 ? hard_ns : deadline;
      }
    }
    // Publish the wake-up time, then look again: a worker starting a cell nudges us only when
    // our wake-up is later than its deadline.
    store(page_, kArmed, static_cast<uint64_t>(wake));
    if (load(page_, kSeq) != seq || load(page_, kRunning) != running) continue;
    pollfd p[2] = {{signal_fd_, POLLIN, 0}, {nudge_r_, POLLIN, 0}};
    int64_t wait_ms = wake > now ? (wake - now + 999'999) / 1'000'000 : 0;
    int n = poll(p, 2, static_cast<int>(wait_ms < 3'600'000 ? wait_ms : 3'600'000));
    if (n <= 0) continue;
    if (p[1].revents) {
      char drain[64];
      while (read(nudge_r_, drain, sizeof drain) > 0) {
      }
    }
    int status = 0;
    if (p[0].revents && reap(pid, &status)) return status;
  }
}

uint32_t Supervisor::answer_for_dead_worker(int status, bool killed) {
  char note[200];
  uint32_t reason;
  ExecStatus st;
  if (killed) {
    reason = kReasonTimeout;
    st = ExecStatus::kTimeout;
    snprintf(note, sizeof note,
             "sandpool: the code did not stop within %lld ms after the timeout; the interpreter was "
             "restarted and its variables were lost\n", static_cast<long long>(grace_ns_ / 1'000'000));
  } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {  // not ours: the OOM killer's
    reason = kReasonOutOfMemory;
    st = ExecStatus::kOutOfMemory;
    snprintf(note, sizeof note, "sandpool: the interpreter was killed (out of memory); variables were lost\n");
  } else {
    reason = kReasonCrashed;
    st = ExecStatus::kCrashed;
    if (WIFSIGNALED(status))
      snprintf(note, sizeof note, "sandpool: the interpreter crashed (signal %d); variables were lost\n", WTERMSIG(status));
    else
      snprintf(note, sizeof note, "sandpool: the interpreter crashed (exit code %d); variables were lost\n",
               WEXITSTATUS(status));
  }
  if (load(page_, kRunning) == kRunIdle) return reason;  // between cells: nobody waits for an answer
  // The page is the cell's to overwrite too: whatever it says, one stream is at most the agent's cap,
  // so the reply fits in one frame and this process reads no more than that.
  uint64_t limit = load(page_, kLimit);
  if (limit == 0 || limit > kMaxOutputBytes) limit = kMaxOutputBytes;
  std::string out, err;
  bool out_cut = take_capture(out_fd_, load(page_, kOutBase), limit, &out);
  bool err_cut = take_capture(err_fd_, load(page_, kErrBase), limit, &err);
  err += note;
  err_cut |= clip(&err, limit);
  sp::agent::ExecuteReply r;
  r.status = st;
  r.flags = static_cast<uint8_t>(sp::agent::kReplyVariablesLost | (out_cut ? sp::agent::kReplyStdoutTruncated : 0) |
                                 (err_cut ? sp::agent::kReplyStderrTruncated : 0));
  r.exit_code = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
  int64_t took = now_ns() - static_cast<int64_t>(load(page_, kStart));
  r.exec_time_us = took > 0 ? static_cast<uint64_t>(took) / 1000 : 0;
  r.stdout_bytes = out;
  r.stderr_bytes = err;
  r.result_json = "\"\"";
  std::string frame;
  sp::agent::FrameEncoder enc(&frame);
  // Both streams are cut to ≤ 1 MiB (kMaxOutputBytes): the frame fits.
  if (!sp::agent::encode_execute_reply(enc, load(page_, kRequestId), r).ok() || !send_all(sock_, frame))
    exit_now(kExitEof, -1);  // the host is gone
  return reason;
}

void Supervisor::exit_now(int code, pid_t worker) {
  if (worker > 0) kill(worker, SIGKILL);
  _exit(code);
}

int Supervisor::run(sp_agent_worker* w) {
  uint32_t restarts = 0, reason = 0;
  int quick_deaths = 0;
  for (;;) {
    int pid = fork_worker(restarts, reason, w);
    if (pid == 0) return 0;
    bool killed = false;
    int status = watch(pid, &killed);
    // Exit codes mean something only when the worker chose them, outside a cell (a cell's
    // os._exit(0) is a crash like any other).
    if (load(page_, kRunning) == kRunIdle && WIFEXITED(status) &&
        (WEXITSTATUS(status) == kExitEof || WEXITSTATUS(status) == kExitProtocol))
      exit_now(WEXITSTATUS(status), -1);
    reason = answer_for_dead_worker(status, killed);
    // A worker that dies before running any cell is broken, not killed by code.
    quick_deaths = load(page_, kSeq) == 0 ? quick_deaths + 1 : 0;
    if (quick_deaths >= kQuickDeathsToGiveUp) {
      log("sandpool agent: the worker keeps dying; giving up\n");
      exit_now(kExitGaveUp, -1);
    }
    ++restarts;
  }
}

}  // namespace

extern "C" int sp_agent_fork(void) {
  // With one thread, no lock can be held elsewhere and the interpreter's at-fork callbacks (which
  // run Python code in the child, each object they touch a page copied) have nothing to do; the
  // worker reseeds itself. libc's fork() still runs the C libraries' pthread_atfork handlers.
  bool hooks = thread_count() != 1;
  // Every signal blocked across the fork, and the Python handlers of those that came before run
  // here, in the parent: none is left flagged for the child to run again.
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  if (PyErr_CheckSignals() != 0) {  // a handler raised: the caller sees its exception
    sigprocmask(SIG_SETMASK, &old, nullptr);
    return -EINTR;
  }
  if (hooks) PyOS_BeforeFork();
  pid_t pid = fork();
  int err = errno;
  if (pid == 0 && hooks) PyOS_AfterFork_Child();
  if (pid != 0 && hooks) PyOS_AfterFork_Parent();
  sigprocmask(SIG_SETMASK, &old, nullptr);
  return pid < 0 ? -err : pid;
}

extern "C" int sp_agent_supervise(int32_t sock_fd, uint32_t grace_ms, struct sp_agent_worker* worker) {
  // One supervisor per process, for its whole life: its state lives on the heap, never freed.
  auto* sup = new Supervisor(sock_fd, grace_ms);
  if (int rc = sup->setup(worker); rc != 0) return rc;
  return sup->run(worker);
}
