// C ABI of libsandpool_clone.so, which a pool's Python template loads with ctypes to isolate each forked clone; not the spawner.
//
// Call order inside the template process (single-threaded, host root):
//   sp_tpl_init(parent_pid, data_bytes, tmp_bytes, agent_path)   once, before any import: parent-death
//       signal, own pid ns fd; enters its own mount namespace holding only the base layer of a
//       sandbox root (runtime, /etc, /dev, agent_path read-only at /opt/sandpool/agent) and pivots
//       into it; empties its capability bounding set, which its clones inherit
//   sp_tpl_set_seccomp(bytes, len)                    once: the BPF program the spawner compiled
//   sp_tpl_set_fork_hooks(0 or 1)                     once, after the imports: 0 when the template
//       has one thread; its forks then skip Python's at-fork bookkeeping (template_clone.cc says why)
//   for each clone:
//     sp_tpl_prefork()        setns(own pid ns) + unshare(NEWPID): the next fork's child is pid 1 of a new pid ns
//     pid = sp_tpl_fork_clone(&params)   (through ctypes.PyDLL: fork, with Python's before/after-fork
//                                         bookkeeping unless turned off; the child runs sp_clone_enter
//                                         first, then PyOS_AfterFork_Child, and returns 0 when isolated)
//     parent: sp_pidfd_open(pid)       (before any waitpid, so the pid cannot be reused)
//   or, instead of that per-clone sequence, the whole request loop in C:
//     rc = sp_tpl_serve(ctrl_fd, &agent_fd, grace_ms, &worker)   (ctypes.PyDLL, GIL held) reads
//         spawn requests, forks and replies as template.py's docstring says; returns 1 in a clone
//         (isolated, agent_fd set, every other fd closed), 0 when the spawner closed the socket,
//         -errno on a socket error. The parent reaps clones itself (SIGCHLD must not be ignored).
//         With `worker` (not NULL), each clone becomes the agent's supervisor at once, before any
//         Python runs in it (src/agent/supervisor.h, grace_ms its grace period), and the 1 is
//         returned in its workers instead, `worker` filled in.
//   (sp_clone_enter can also be called after a plain os.fork(); it then runs after
//   Python's after-fork work.)
// sp_clone_enter's steps (DESIGN.md §4, "root" variant of research §4): join the cgroups
// (write 0 to each passed cgroup.procs fd), setns into its prepared netns (else unshare one),
// unshare NS|IPC|UTS|CGROUP, mount the scratch
// layer (own /mnt/data, /tmp, /dev/shm, /proc), lo up, hostname, rlimits, lock securebits (the
// bounding set is the template's, already empty), setgroups(0) + setresgid/uid to the clone's unprivileged host ids,
// clear capabilities, NO_NEW_PRIVS, parent-death signal, stdio to /dev/null, close every fd
// but the agent socket, load the precompiled seccomp filter, then write a ready record
// (ChildReport{0,0}) to the report fd and close it. No libseccomp and no allocation in the child.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sp_clone_params {
  uint32_t host_uid;     // unprivileged host uid/gid the clone runs as
  uint32_t host_gid;
  int32_t agent_fd;      // kept open (the agent's socket)
  int32_t report_fd;     // ChildReport on failure, {0,0} when ready; closed
  int32_t cgroup_fds[4]; // cgroup.procs fds to join, -1 for unused; closed
  int32_t netns_fd;      // a network namespace made ahead (lo up) to setns into; -1: unshare one; closed
};

int sp_tpl_init(int32_t parent_pid, uint64_t data_bytes, uint64_t tmp_bytes, const char* agent_path);
int sp_tpl_set_seccomp(const void* bpf, uint32_t len);
int sp_tpl_prefork(void);
int sp_clone_enter(const struct sp_clone_params* p);
int sp_tpl_fork_clone(const struct sp_clone_params* p);
void sp_tpl_set_fork_hooks(int on);
int sp_pidfd_open(int32_t pid);
struct sp_agent_worker;
int sp_tpl_serve(int32_t ctrl_fd, int32_t* agent_fd_out, uint32_t grace_ms, struct sp_agent_worker* worker);
// sp_tpl_share_memory_on_serve(): the next sp_tpl_serve calls sp_tpl_share_memory first (reporting
//     a failure on stderr), so that no Python runs between the copy and the first fork.
void sp_tpl_share_memory_on_serve(void);

// Template memory layout (template_memory.cc), all optional: a template that skips them or
// whose kernel refuses works the same, its forks just copy more page-table entries. One of
// sp_tpl_share_memory or (sp_tpl_arena_region + sp_tpl_collapse_thp), not both.
// sp_tpl_memory_open(): before sp_tpl_init (the template's root has no /proc): opens
//     /proc/self/smaps and reads the host's THP settings for the calls below. 0 or -ENOENT.
// sp_tpl_share_memory(&ranges): after the warm-up, before serving forks, with one thread: copies
//     the resident pages of every private writable anonymous mapping (heap included; not the
//     stack, nor locked, don't-dump, don't-copy or wipe-on-fork memory), and the whole of every
//     private non-executable file mapping holding copied-on-write pages (libraries' data and
//     RELRO), into one memfd, maps each back MAP_PRIVATE at the same address with the same
//     protection, and seals the file against any change. Returns the bytes copied (ranges moved
//     in the out-parameter) or -errno; on an error the ranges moved so far stay moved, the rest
//     keep their memory. Closes the smaps fd.
// sp_tpl_arena_region(bytes): before sp_tpl_init (it calls sp_tpl_memory_open) and before the
//     imports. CPython's object arenas (1 MiB each) come
//     from one reservation of `bytes` aligned to a huge page instead of one mmap each (the
//     old allocator serves other sizes and what does not fit). 0, or -ENOSYS outside a Python
//     process, -EALREADY, -errno of the reservation.
// sp_tpl_collapse_thp(&failures, &first_errno): after the warm-up, before serving forks:
//     MADV_COLLAPSE on every huge-page-aligned, at least half-populated range of the private
//     writable anonymous mappings. Returns the bytes now mapped by huge pages (failures and
//     the errno of the first failure in the out-parameters: EINVAL on kernels before 6.1),
//     or -EOPNOTSUPP without trying when THP is "never" or absent (-ENOENT: /proc/self/smaps
//     could not be opened). Closes the smaps fd: call once. Clones copy-on-write a
//     shared huge page 4 KiB at a time (the kernel splits the PMD in the clone).
int sp_tpl_memory_open(void);
int64_t sp_tpl_share_memory(int32_t* ranges_out);
int sp_tpl_arena_region(uint64_t bytes);
int64_t sp_tpl_collapse_thp(int32_t* failures, int32_t* first_errno);

#ifdef __cplusplus
}
#endif
