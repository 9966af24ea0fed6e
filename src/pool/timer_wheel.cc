// Hierarchical timing wheel: 11 levels of 64 slots, 1 ms at level 0, cascading.
//
// Invariant (with now = now_ms_): an entry at level L, slot s has a deadline d > now
// that agrees with now on every bit above level L's 6-bit digit, and whose level-L
// digit is s (so s > now's level-L digit). advance() therefore never jumps over the
// first time a slot needs attention (next_event()): there level 0 fires and higher
// levels cascade their entries to lower levels.
#include "pool/timer_wheel.h"

#include <bit>
#include <type_traits>

namespace sp {
namespace {

constexpr int kBits = TimerWheel::kBitsPerLevel;

inline int digit(uint64_t t, int level) {
  return static_cast<int>((t >> (kBits * level)) & (TimerWheel::kSlots - 1));
}

// Bits above level `level`'s digit kept, the rest cleared.
inline uint64_t prefix_above(uint64_t t, int level) {
  int shift = kBits * (level + 1);
  return shift >= 64 ? 0 : (t >> shift) << shift;
}

// SAFETY: TimerEntry is standard-layout with `node_` as its first member, so a pointer
// to that node is pointer-interconvertible with the entry (checked below).
inline TimerEntry* entry_of(TimerNode* n) { return reinterpret_cast<TimerEntry*>(n); }

}  // namespace

static_assert(std::is_standard_layout_v<TimerEntry>);

TimerWheel::TimerWheel(uint64_t now_ms) : now_ms_(now_ms) {
  for (auto& level : slots_)
    for (TimerNode& head : level) head.prev = head.next = &head;
  due_.prev = due_.next = &due_;
}

TimerWheel::~TimerWheel() {
  auto drain = [](TimerNode* head) {
    while (!empty(head)) {
      auto* e = entry_of(head->next);
      unlink(&e->node_);
      e->where_ = TimerEntry::kUnarmed;
    }
  };
  for (auto& level : slots_)
    for (TimerNode& head : level) drain(&head);
  drain(&due_);
}

void TimerWheel::push_back(TimerNode* head, TimerNode* n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

void TimerWheel::unlink(TimerNode* n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = nullptr;
}

void TimerWheel::place(TimerEntry* e) {
  // The highest bit where deadline and now differ picks the level.
  uint64_t diff = e->deadline_ms_ ^ now_ms_;
  int level = (63 - std::countl_zero(diff)) / kBits;
  int slot = digit(e->deadline_ms_, level);
  e->where_ = static_cast<uint8_t>(level);
  e->slot_ = static_cast<uint8_t>(slot);
  push_back(&slots_[level][slot], &e->node_);
  occupied_[level] |= uint64_t{1} << slot;
}

void TimerWheel::arm(TimerEntry* e, uint64_t deadline_ms) {
  cancel(e);
  e->deadline_ms_ = deadline_ms;
  ++size_;
  if (deadline_ms <= now_ms_) {
    e->where_ = TimerEntry::kDue;
    push_back(&due_, &e->node_);
  } else {
    place(e);
  }
}

void TimerWheel::cancel(TimerEntry* e) {
  if (!e->armed()) return;
  unlink(&e->node_);
  if (e->where_ < kLevels && empty(&slots_[e->where_][e->slot_]))
    occupied_[e->where_] &= ~(uint64_t{1} << e->slot_);
  e->where_ = TimerEntry::kUnarmed;
  --size_;
}

std::optional<uint64_t> TimerWheel::next_event() const {
  for (int level = 0; level < kLevels; ++level) {
    if (occupied_[level] == 0) continue;
    int d = digit(now_ms_, level);
    uint64_t later = d == kSlots - 1 ? 0 : occupied_[level] & (~uint64_t{0} << (d + 1));
    // By the invariant every occupied slot is later than now's digit; `later` is
    // occupied_[level] itself, kept as a guard.
    if (later == 0) continue;
    int slot = std::countr_zero(later);
    return prefix_above(now_ms_, level) | (uint64_t{static_cast<unsigned>(slot)} << (kBits * level));
  }
  return std::nullopt;
}

std::optional<uint64_t> TimerWheel::next_deadline() const {
  if (!empty(&due_)) return now_ms_;
  return next_event();
}

void TimerWheel::take_slot(int level, int slot, TimerNode* firing) {
  TimerNode* head = &slots_[level][slot];
  occupied_[level] &= ~(uint64_t{1} << slot);
  while (!empty(head)) {
    auto* e = entry_of(head->next);
    unlink(&e->node_);
    if (e->deadline_ms_ <= now_ms_) {
      e->where_ = TimerEntry::kFiring;
      push_back(firing, &e->node_);
    } else {
      place(e);  // cascades to a lower level
    }
  }
}

size_t TimerWheel::fire_all(TimerNode* firing, uint64_t now_ms) {
  size_t fired = 0;
  // One at a time: a callback may cancel (unlink) entries still on `firing`.
  while (!empty(firing)) {
    auto* e = entry_of(firing->next);
    unlink(&e->node_);
    e->where_ = TimerEntry::kUnarmed;
    --size_;
    ++fired;
    e->cb_(e, now_ms);
  }
  return fired;
}

size_t TimerWheel::advance(uint64_t now_ms) {
  size_t fired = 0;
  TimerNode firing;
  firing.prev = firing.next = &firing;
  // Entries armed "already due" before this call fire first; ones armed during it wait.
  while (!empty(&due_)) {
    TimerNode* n = due_.next;
    unlink(n);
    entry_of(n)->where_ = TimerEntry::kFiring;
    push_back(&firing, n);
  }
  fired += fire_all(&firing, now_ms);
  while (now_ms > now_ms_) {
    std::optional<uint64_t> event = next_event();
    if (!event || *event > now_ms) {
      now_ms_ = now_ms;  // nothing needs attention up to now_ms: jump
      break;
    }
    now_ms_ = *event;
    for (int level = 0; level < kLevels; ++level) {
      int slot = digit(now_ms_, level);
      if (occupied_[level] & (uint64_t{1} << slot)) {
        take_slot(level, slot, &firing);
        break;  // only the lowest level can need attention at one instant
      }
    }
    fired += fire_all(&firing, now_ms);
  }
  return fired;
}

}  // namespace sp
