// The agent's frames as a sandbox may write them: the server decodes every byte a sandbox sends,
// and a sandbox runs code of unknown authors. Input: one byte choosing how the stream is cut,
// then the stream. Checks, besides "no crash":
//  - bytes fed in pieces give the same frames, and the same error, as fed at once;
//  - a message that decodes encodes back to the same payload: the codec is canonical, so the
//    host never acts on a message that two different byte strings could mean.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "fuzz_split.h"

using namespace sp::agent;
using sp::Result;
using sp::Status;
using sp::fuzz::check;

namespace {

constexpr uint32_t kMaxPayload = 2048;

// Encodes the decoded message of `f` again; false when `f` does not decode (then nothing to compare).
template <typename M>
bool reencode(const Result<M>& m, std::string* out, Status (*enc)(FrameEncoder&, uint64_t, const M&), uint64_t id) {
  if (!m.ok()) return false;
  FrameEncoder e(out, kMaxPayload);
  check(enc(e, id, m.value()).ok(), "a decoded message encodes");
  return true;
}

template <typename M>
bool reencode_typed(const Result<M>& m, std::string* out, Status (*enc)(FrameEncoder&, FrameType, uint64_t, const M&),
                    FrameType t, uint64_t id) {
  if (!m.ok()) return false;
  FrameEncoder e(out, kMaxPayload);
  check(enc(e, t, id, m.value()).ok(), "a decoded message encodes");
  return true;
}

void check_canonical(const Frame& f) {
  std::string out;
  uint64_t id = f.header.request_id;
  bool decoded = false;
  switch (f.header.type) {
    case FrameType::kHello: decoded = reencode(decode_hello(f), &out, encode_hello, id); break;
    case FrameType::kExecuteRequest:
      decoded = reencode(decode_execute_request(f), &out, encode_execute_request, id);
      break;
    case FrameType::kExecuteReply: decoded = reencode(decode_execute_reply(f), &out, encode_execute_reply, id); break;
    case FrameType::kListDir:
    case FrameType::kStat:
    case FrameType::kDelete:
      decoded = reencode_typed(decode_path_request(f), &out, encode_path_request, f.header.type, id);
      break;
    case FrameType::kListReply:
    case FrameType::kStatReply:
      decoded = reencode_typed(decode_list_reply(f), &out, encode_list_reply, f.header.type, id);
      break;
    case FrameType::kReadFile: decoded = reencode(decode_read_file(f), &out, encode_read_file, id); break;
    case FrameType::kFileData: decoded = reencode(decode_file_data(f), &out, encode_file_data, id); break;
    case FrameType::kWriteOpen: decoded = reencode(decode_write_open(f), &out, encode_write_open, id); break;
    case FrameType::kWriteChunk: decoded = reencode(decode_write_chunk(f), &out, encode_write_chunk, id); break;
    case FrameType::kWriteClose:
    case FrameType::kWriteAbort:
      decoded = reencode_typed(decode_upload_ref(f), &out, encode_upload_ref, f.header.type, id);
      break;
    case FrameType::kOk: decoded = reencode(decode_ok(f), &out, encode_ok, id); break;
    case FrameType::kError: decoded = reencode(decode_error(f), &out, encode_error, id); break;
    default: return;  // ping, pong, interrupt, reseed: no payload to decode
  }
  if (!decoded) return;
  check(out.size() >= kFrameHeaderBytes, "an encoded frame has a header");
  check(std::string_view(out).substr(kFrameHeaderBytes) == f.payload, "decode then encode gives the payload back");
  // The frame the encoder made decodes to the same header.
  FrameDecoder again(kMaxPayload);
  again.feed(out);
  auto g = again.next();
  check(g.ok() && g.value().has_value(), "an encoded frame decodes");
  const Frame& h = *g.value();
  check(h.header.type == f.header.type && h.header.request_id == f.header.request_id &&
            h.header.payload_bytes == f.header.payload_bytes && h.payload == f.payload,
        "an encoded frame decodes to the same header and payload");
}

// What the decoder made of the stream: one record per frame, then the error if any.
std::vector<std::string> decode_stream(const std::vector<std::string_view>& pieces) {
  std::vector<std::string> seen;
  FrameDecoder d(kMaxPayload);
  for (std::string_view piece : pieces) {
    if (piece.size() > 3) {  // both ways of filling the buffer
      d.feed(piece);
    } else {
      char* p = d.prepare(piece.size());
      for (size_t i = 0; i < piece.size(); i++) p[i] = piece[i];
      d.commit(piece.size());
    }
    for (;;) {
      auto r = d.next();
      if (!r.ok()) {
        seen.push_back("error: " + std::string(r.error().message()));
        check(!d.next().ok(), "after an error the stream stays dead");
        return seen;
      }
      if (!r.value().has_value()) break;
      const Frame& f = *r.value();
      check(f.payload.size() == f.header.payload_bytes, "payload length is the header's");
      check(f.header.payload_bytes <= kMaxPayload, "payload within the limit");
      check(static_cast<uint8_t>(f.header.type) >= 1 && static_cast<uint8_t>(f.header.type) <= kMaxFrameType,
            "frame type known");
      check_canonical(f);
      seen.push_back(std::to_string(static_cast<int>(f.header.type)) + "/" + std::to_string(f.header.request_id) + "/" +
                     std::string(f.payload));
    }
  }
  return seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  sp::fuzz::same_at_once_and_in_pieces(stream, data[0], decode_stream,
                                       "the same frames whether the bytes come at once or in pieces");
  return 0;
}
