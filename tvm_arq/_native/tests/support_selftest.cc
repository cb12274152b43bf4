// tvm_arq: self-test of our runtime support headers (native/runtime_support), built with the host
// compiler by tests/test_boards.py. Prints "ok <n>" or the first failed check.
//   support_selftest fp16 IN OUT   convert float32/float64 values read from IN (see the test)
#include <builtin_fp16.h>
#include <tvm/support/io.h>
#include <tvm/support/serializer.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "support/arena.h"
#include "support/base64.h"
#include "support/bytes_io.h"
#include "support/ring_buffer.h"
#include "support/utils.h"

using namespace tvm::support;

static int g_checks = 0;
#define CHECK(cond)                                                          \
  do {                                                                       \
    ++g_checks;                                                              \
    if (!(cond)) {                                                           \
      std::printf("FAILED line %d: %s\n", __LINE__, #cond);                  \
      return 1;                                                              \
    }                                                                        \
  } while (0)

struct Pod {
  int32_t a;
  double b;
};

static int TestSerializer() {
  std::string blob;
  BytesOutStream out(&blob);
  uint64_t u = 0x0102030405060708ULL;
  out.Write(u);
  out.Write(std::string("hello"));
  out.Write(std::vector<int64_t>{1, -2, 3});
  out.Write(std::vector<std::string>{"a", "", "ccc"});
  out.Write(tvm::ffi::String("ffi"));
  out.Write(std::map<int64_t, std::string>{{7, "seven"}, {-1, "minus"}});
  out.Write(Pod{-5, 2.5});
  out.WriteArray<int16_t>(std::vector<int16_t>{9, 8}.data(), 2);
  // layout: u64 raw; string = u64 length + bytes
  CHECK(blob.size() > 16);
  uint64_t len;
  std::memcpy(&len, blob.data() + 8, 8);
  CHECK(len == 5 && blob.compare(16, 5, "hello") == 0);

  BytesInStream in(blob);
  uint64_t u2;
  std::string s;
  std::vector<int64_t> v;
  std::vector<std::string> vs;
  tvm::ffi::String fs;
  std::map<int64_t, std::string> m;
  Pod p{};
  int16_t arr[2];
  CHECK(in.Read(&u2) && u2 == u);
  CHECK(in.Read(&s) && s == "hello");
  CHECK(in.Read(&v) && v.size() == 3 && v[1] == -2);
  CHECK(in.Read(&vs) && vs.size() == 3 && vs[1].empty() && vs[2] == "ccc");
  CHECK(in.Read(&fs) && std::string(fs) == "ffi");
  CHECK(in.Read(&m) && m.size() == 2 && m[7] == "seven" && m[-1] == "minus");
  CHECK(in.Read(&p) && p.a == -5 && p.b == 2.5);
  CHECK(in.ReadArray(arr, 2) && arr[0] == 9 && arr[1] == 8);
  uint8_t extra;
  CHECK(!in.Read(&extra));  // end of stream
  return 0;
}

static int TestRingBuffer() {
  RingBuffer rb;
  std::string expect;
  std::string got;
  unsigned seed = 1;
  for (int round = 0; round < 2000; ++round) {
    seed = seed * 1103515245u + 12345u;
    size_t n = (seed >> 8) % 3000;
    std::string chunk(n, '\0');
    for (size_t i = 0; i < n; ++i) chunk[i] = static_cast<char>((round * 31 + i) & 0xff);
    if (round % 3 == 0) {
      rb.WriteWithCallback(
          [&](void* dst, size_t size) {
            size_t k = std::min(size, chunk.size());
            std::memcpy(dst, chunk.data(), k);
            return k;
          },
          n);
    } else {
      rb.Write(chunk.data(), n);
    }
    expect += chunk;
    size_t take = ((seed >> 4) % 4000);
    take = std::min(take, rb.bytes_available());
    if (round % 2 == 0) {
      std::string buf(take, '\0');
      rb.Read(&buf[0], take);
      got += buf;
    } else {
      while (take != 0) {  // a consumer that takes at most 100 bytes per call
        size_t k = rb.ReadWithCallback(
            [&](const void* src, size_t size) {
              size_t c = std::min<size_t>(size, 100);
              got.append(static_cast<const char*>(src), c);
              return c;
            },
            take);
        take -= k;
      }
    }
  }
  std::string rest(rb.bytes_available(), '\0');
  rb.Read(&rest[0], rest.size());
  got += rest;
  CHECK(got == expect);
  CHECK(rb.bytes_available() == 0);
  return 0;
}

static int TestBase64() {
  const char* cases[][2] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
                            {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (auto& c : cases) {
    std::string enc;
    BytesOutStream bo(&enc);
    Base64OutStream b64(&bo);
    b64.Write(c[0], std::strlen(c[0]));
    b64.Finish();
    CHECK(enc == c[1]);
    std::string padded = std::string("  \n") + enc;
    BytesInStream bi(padded);
    Base64InStream d(&bi);
    d.InitPosition();
    std::string dec(std::strlen(c[0]) + 4, '\0');
    size_t n = d.Read(&dec[0], dec.size());
    CHECK(n == std::strlen(c[0]) && dec.compare(0, n, c[0]) == 0);
  }
  // binary round trip through typed reads
  std::string enc;
  BytesOutStream bo(&enc);
  Base64OutStream b64(&bo);
  std::vector<uint8_t> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  b64.Write(bytes);
  b64.Finish();
  BytesInStream bi(enc);
  Base64InStream d(&bi);
  d.InitPosition();
  std::vector<uint8_t> back;
  CHECK(d.Read(&back) && back == bytes);
  return 0;
}

static int TestArenaUtils() {
  Arena arena;
  for (int round = 0; round < 3; ++round) {
    std::vector<int64_t*> ptrs;
    for (int i = 1; i < 500; ++i) {
      int64_t* p = arena.allocate_<int64_t>(i);
      CHECK(reinterpret_cast<uintptr_t>(p) % alignof(int64_t) == 0);
      for (int k = 0; k < i; ++k) p[k] = i;
      ptrs.push_back(p);
    }
    for (size_t j = 0; j < ptrs.size(); ++j) CHECK(ptrs[j][j] == static_cast<int64_t>(j + 1));
    arena.RecycleAll();
  }
  CHECK(IsNumber("123") && IsNumber("-4") && !IsNumber("") && !IsNumber("1a") && !IsNumber("-"));
  CHECK(StartsWith(std::string("RPCSessionTimeoutError: x"), "RPCSessionTimeoutError: "));
  CHECK(!StartsWith(std::string("RPC"), "RPCSession"));
  return 0;
}

static int Fp16(const char* in_path, const char* out_path) {
  FILE* f = std::fopen(in_path, "rb");
  FILE* o = std::fopen(out_path, "wb");
  if (f == nullptr || o == nullptr) return 2;
  uint32_t n = 0;
  if (std::fread(&n, 4, 1, f) != 1) return 2;
  std::vector<float> fs(n);
  std::vector<double> ds(n);
  if (std::fread(fs.data(), 4, n, f) != n || std::fread(ds.data(), 8, n, f) != n) return 2;
  for (float x : fs) {
    uint16_t h = __truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(x);
    std::fwrite(&h, 2, 1, o);
  }
  for (uint32_t i = 0; i < 65536; ++i) {
    float y = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(static_cast<uint16_t>(i));
    std::fwrite(&y, 4, 1, o);
  }
  for (double x : ds) {
    uint16_t h = __truncXfYf2__<double, uint64_t, 52, uint16_t, uint16_t, 10>(x);
    std::fwrite(&h, 2, 1, o);
  }
  std::fclose(f);
  std::fclose(o);
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "fp16") == 0) return Fp16(argv[2], argv[3]);
  if (TestSerializer() || TestRingBuffer() || TestBase64() || TestArenaUtils()) return 1;
  std::printf("ok %d\n", g_checks);
  return 0;
}
