// RawClient: a blocking loopback client socket for speaking (or mis-speaking) the wire
// protocol by hand in tests; every read is bounded by a 5 s socket timeout.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <string>

#include "common/json.h"
#include "runtime/transport/crc32c.h"
#include "runtime/transport/frame.h"

namespace ravnest::rt {

class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};  // every read is bounded
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() { ::close(fd_); }
  bool connected() const { return connected_; }

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w <= 0) return;
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  // Reads exactly n bytes; false on EOF, error or the 5 s timeout.
  bool read(void* data, size_t n) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      ssize_t r = ::recv(fd_, p, n, 0);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
  // True when the server closed the connection (EOF or reset) before the timeout.
  bool closed_by_server() {
    char buf[4096];
    while (true) {
      ssize_t r = ::recv(fd_, buf, sizeof(buf), 0);
      if (r == 0) return true;
      if (r < 0) return errno == ECONNRESET;
    }
  }
  void send_frame(FrameHeader h, const std::string& payload, bool corrupt_crc = false) {
    h.payload_crc = crc32c(payload.data(), payload.size()) ^ (corrupt_crc ? 1u : 0u);
    auto bytes = encode_header(h);
    write(bytes.data(), bytes.size());
    write(payload.data(), payload.size());
  }
  void send_hello(const std::string& node, const std::string& run, uint16_t version = kProtocolVersion) {
    std::string body = "{\"node\":\"" + node + "\",\"run\":\"" + run + "\",\"protocol\":1}";
    FrameHeader h = *make_header(FrameKind::kHello, 0, 0, 0, DType::kU8, {static_cast<int64_t>(body.size())});
    h.version = version;
    send_frame(h, body);
  }
  // Reads the server's HELLO answer.
  Result<Json> read_hello() {
    std::array<uint8_t, kFrameHeaderBytes> bytes;
    if (!read(bytes.data(), bytes.size())) return error(Code::kNetwork, "no HELLO answer");
    RN_ASSIGN_OR_RETURN(FrameHeader h, decode_header(bytes, FrameLimits{}));
    std::string payload(h.payload_bytes, '\0');
    if (!read(payload.data(), payload.size())) return error(Code::kNetwork, "short HELLO answer");
    return parse_json(payload);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

}  // namespace ravnest::rt
