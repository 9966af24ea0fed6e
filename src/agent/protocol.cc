// Framing of the agent protocol: incremental decoder, encoder, bounds-checked reader.
// Message layouts live in messages.cc.
#include "agent/protocol.h"

#include <bit>
#include <cstring>

namespace sp::agent {
namespace {

constexpr size_t kKeepBufferBytes = 256 * 1024;

// The wire is little-endian; so are the hosts we build for, so loads are plain copies.
static_assert(std::endian::native == std::endian::little);

uint32_t load_u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t load_u64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

// ---- FrameDecoder ----

void FrameDecoder::compact() {
  if (begin_ == 0) return;
  std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
}

char* FrameDecoder::prepare(size_t min_bytes) {
  if (buf_.size() - end_ < min_bytes) {
    compact();
    if (buf_.size() - end_ < min_bytes) buf_.resize(end_ + std::max(min_bytes, buf_.size()));
  }
  return buf_.data() + end_;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (bytes.empty()) return;
  std::memcpy(prepare(bytes.size()), bytes.data(), bytes.size());
  commit(bytes.size());
}

Result<std::optional<Frame>> FrameDecoder::next() {
  if (error_) return *error_;
  // A frame handed out earlier is no longer referenced: reclaim space cheaply, and give
  // back a buffer a big frame left behind (thousands of idle sessions each hold one).
  if (begin_ == end_) {
    begin_ = end_ = 0;
    if (buf_.size() > kKeepBufferBytes) std::vector<char>().swap(buf_);
  }
  size_t avail = end_ - begin_;
  if (avail < kFrameHeaderBytes) return std::optional<Frame>{};
  const char* p = buf_.data() + begin_;
  FrameHeader h;
  uint32_t magic = load_u32(p);
  h.payload_bytes = load_u32(p + 4);
  h.version = static_cast<uint8_t>(p[8]);
  uint8_t type = static_cast<uint8_t>(p[9]);
  h.flags = static_cast<uint16_t>(static_cast<uint8_t>(p[10]) | (static_cast<uint8_t>(p[11]) << 8));
  h.request_id = load_u64(p + 12);
  if (magic != kFrameMagic) {
    error_ = Error{kEProtocol, "agent frame: bad magic"};
  } else if (h.version != kProtocolVersion) {
    error_ = Error{kEProtocol, "agent frame: unsupported version"};
  } else if (type == 0 || type > kMaxFrameType) {
    error_ = Error{kEProtocol, "agent frame: unknown type"};
  } else if (h.flags != 0 && !(h.flags == kFrameWarmUp && type == static_cast<uint8_t>(FrameType::kExecuteRequest))) {
    error_ = Error{kEProtocol, "agent frame: reserved flags set"};
  } else if (h.payload_bytes > max_payload_bytes_) {
    error_ = Error{kETooLarge, "agent frame: payload over the limit"};
  }
  if (error_) return *error_;
  h.type = static_cast<FrameType>(type);
  if (avail - kFrameHeaderBytes < h.payload_bytes) {
    // Make room for the whole frame now so the next reads land contiguously.
    if (begin_ + kFrameHeaderBytes + h.payload_bytes > buf_.size()) {
      compact();
      if (kFrameHeaderBytes + h.payload_bytes > buf_.size()) buf_.resize(kFrameHeaderBytes + h.payload_bytes);
    }
    return std::optional<Frame>{};
  }
  Frame f{h, std::string_view(p + kFrameHeaderBytes, h.payload_bytes)};
  begin_ += kFrameHeaderBytes + h.payload_bytes;
  return std::optional<Frame>{f};
}

// ---- FrameEncoder ----

void FrameEncoder::begin(FrameType type, uint64_t request_id, uint16_t flags) {
  start_ = out_->size();
  put_u32(kFrameMagic);
  put_u32(0);  // length, patched by finish()
  put_u8(kProtocolVersion);
  put_u8(static_cast<uint8_t>(type));
  put_u8(static_cast<uint8_t>(flags));
  put_u8(static_cast<uint8_t>(flags >> 8));
  put_u64(request_id);
}

void FrameEncoder::put_u32(uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out_->append(b, 4);
}

void FrameEncoder::put_u64(uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  out_->append(b, 8);
}

void FrameEncoder::put_bytes(std::string_view v) {
  put_u32(static_cast<uint32_t>(v.size()));
  out_->append(v.data(), v.size());
}

Status FrameEncoder::finish() {
  size_t payload = out_->size() - start_ - kFrameHeaderBytes;
  if (payload > max_payload_bytes_) {
    out_->resize(start_);
    return Error{kETooLarge, "agent frame: encoded payload over the limit"};
  }
  uint32_t n = static_cast<uint32_t>(payload);
  std::memcpy(out_->data() + start_ + 4, &n, 4);
  return {};
}

// ---- PayloadReader ----

Result<uint8_t> PayloadReader::get_u8() {
  if (p_.size() - pos_ < 1) return Error{kEProtocol, "agent message: truncated"};
  return static_cast<uint8_t>(p_[pos_++]);
}

Result<uint32_t> PayloadReader::get_u32() {
  if (p_.size() - pos_ < 4) return Error{kEProtocol, "agent message: truncated"};
  uint32_t v = load_u32(p_.data() + pos_);
  pos_ += 4;
  return v;
}

Result<int32_t> PayloadReader::get_i32() {
  SP_TRY_ASSIGN(uint32_t v, get_u32());
  return static_cast<int32_t>(v);
}

Result<uint64_t> PayloadReader::get_u64() {
  if (p_.size() - pos_ < 8) return Error{kEProtocol, "agent message: truncated"};
  uint64_t v = load_u64(p_.data() + pos_);
  pos_ += 8;
  return v;
}

Result<int64_t> PayloadReader::get_i64() {
  SP_TRY_ASSIGN(uint64_t v, get_u64());
  return static_cast<int64_t>(v);
}

Result<std::string_view> PayloadReader::get_bytes() {
  SP_TRY_ASSIGN(uint32_t n, get_u32());
  if (p_.size() - pos_ < n) return Error{kEProtocol, "agent message: field past the end"};
  std::string_view v = p_.substr(pos_, n);
  pos_ += n;
  return v;
}

Status PayloadReader::done() const {
  if (pos_ != p_.size()) return Error{kEProtocol, "agent message: trailing bytes"};
  return {};
}

}  // namespace sp::agent
