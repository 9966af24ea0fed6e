// Google Benchmark: encoding and decoding one execute request / reply frame.
#include <benchmark/benchmark.h>

#include "agent/protocol.h"

namespace {

using namespace sp::agent;

void BM_EncodeDecodeRequest(benchmark::State& state) {
  std::string out;
  ExecuteRequest req;
  req.code = "print(1)";
  FrameDecoder dec;
  for (auto _ : state) {
    out.clear();
    FrameEncoder enc(&out);
    (void)encode_execute_request(enc, 7, req);
    dec.feed(out);
    auto f = dec.next();
    auto m = decode_execute_request(*f.value());
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_EncodeDecodeRequest);

void BM_DecodeReplySplit(benchmark::State& state) {
  std::string out;
  FrameEncoder enc(&out);
  std::string big(static_cast<size_t>(state.range(0)), 'x');
  ExecuteReply rep;
  rep.stdout_bytes = big;
  rep.result_json = "null";
  (void)encode_execute_reply(enc, 1, rep);
  FrameDecoder dec;
  for (auto _ : state) {
    // Arrives in 3 reads, as from a socket.
    size_t third = out.size() / 3;
    dec.feed(std::string_view(out).substr(0, third));
    benchmark::DoNotOptimize(dec.next());
    dec.feed(std::string_view(out).substr(third, third));
    benchmark::DoNotOptimize(dec.next());
    dec.feed(std::string_view(out).substr(2 * third));
    auto f = dec.next();
    auto m = decode_execute_reply(*f.value());
    benchmark::DoNotOptimize(m);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_DecodeReplySplit)->Arg(16)->Arg(64 << 10);

}  // namespace

BENCHMARK_MAIN();
