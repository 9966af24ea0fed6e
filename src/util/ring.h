// SpscRing<T>: a bounded lock-free ring for exactly one producer thread and one consumer thread; not MPMC, never blocks.
//
// Contract: try_push() is called only by the producer thread, try_pop() and
// size_approx() by either (size is a hint). Capacity is rounded up to a power of two.
// Elements are moved in and out; a slot's T is destroyed when popped. No
// allocation after construction. Wake-ups are the caller's business (uv_async,
// eventfd): the ring only publishes with release/acquire ordering.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <utility>

namespace sp {

template <class T>
class SpscRing {
 public:
  explicit SpscRing(size_t min_capacity) {
    size_t cap = 2;
    while (cap < min_capacity) cap <<= 1;
    mask_ = cap - 1;
    slots_ = std::unique_ptr<Slot[]>(new Slot[cap]);
  }
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;
  ~SpscRing() {
    while (try_pop()) {
    }
  }

  size_t capacity() const { return mask_ + 1; }

  // Producer only. Returns false (and leaves `v` untouched) when full.
  bool try_push(T&& v) {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_cache_ > mask_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - head_cache_ > mask_) return false;
    }
    // SAFETY: the slot is free (tail - head <= mask) and only this thread writes it until
    // the release store below publishes it.
    new (slots_[tail & mask_].storage) T(std::move(v));
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer only. Empty optional when there is nothing to take.
  std::optional<T> try_pop() {
    const size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_cache_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == tail_cache_) return std::nullopt;
    }
    // SAFETY: the acquire load of tail_ made the producer's construction visible.
    T* p = std::launder(reinterpret_cast<T*>(slots_[head & mask_].storage));
    std::optional<T> out(std::move(*p));
    p->~T();
    head_.store(head + 1, std::memory_order_release);
    return out;
  }

  size_t size_approx() const {
    return tail_.load(std::memory_order_acquire) - head_.load(std::memory_order_acquire);
  }

 private:
  struct Slot {
    alignas(T) unsigned char storage[sizeof(T)];
  };
  static constexpr size_t kLine = 64;

  std::unique_ptr<Slot[]> slots_;
  size_t mask_ = 0;
  alignas(kLine) std::atomic<size_t> head_{0};  // consumer writes
  size_t tail_cache_ = 0;                       // consumer's view of tail_
  alignas(kLine) std::atomic<size_t> tail_{0};  // producer writes
  size_t head_cache_ = 0;                       // producer's view of head_
};

}  // namespace sp
