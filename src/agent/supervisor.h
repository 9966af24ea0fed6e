// The agent's supervisor, in C++ behind a C ABI, built into libsandpool_clone.so.
//
// sandpool_agent.serve() loads the library with ctypes.PyDLL (the GIL stays held during a call)
// and calls sp_agent_supervise() once. That process becomes the supervisor of PROTOCOL.md §3 and
// never runs Python again: it forks the workers, and each worker returns from the call into
// Python to serve the socket. Written in C so that the supervisor writes only a few pages of its
// own after the fork; as a Python loop it copied ≈ 1 MiB of the interpreter's pages per sandbox
// (refcounts of every object its loop touched).
//
//   rc = sp_agent_supervise(sock_fd, grace_ms, &worker)
//     rc == 0 in each worker (the first and every replacement), `worker` filled in;
//     rc < 0 (-errno) when the supervisor could not be set up (nothing was forked);
//     the supervisor itself never returns: it exits with the agent's exit code
//     (0 the host closed the socket, 3 protocol error, 4 the workers keep dying).
#ifndef SANDPOOL_AGENT_SUPERVISOR_H
#define SANDPOOL_AGENT_SUPERVISOR_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sp_agent_worker {
  uint64_t shared_addr;  // the page shared with the supervisor (PROTOCOL.md §3), 72 bytes used
  int32_t nudge_fd;      // write end of the pipe that wakes the supervisor early
  int32_t out_fd;        // capture memfds the supervisor keeps (the worker dup2s them to 1, 2)
  int32_t err_fd;
  int32_t log_fd;        // where the agent's own diagnostics go
  uint32_t restarts;     // workers started before this one
  uint32_t reason;       // why the last one ended: 0 initial, 1 timeout, 2 crashed, 3 out of memory
};

int sp_agent_supervise(int32_t sock_fd, uint32_t grace_ms, struct sp_agent_worker* worker);

// The supervisor's fork, for tests: every signal blocked across it (the child starts with none
// pending), and the interpreter's at-fork callbacks run only when the process has more than
// one thread. Returns the pid, 0 in the child, or -errno.
int sp_agent_fork(void);

#ifdef __cplusplus
}
#endif

#endif  // SANDPOOL_AGENT_SUPERVISOR_H
