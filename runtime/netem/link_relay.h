// Userspace emulation of a home-internet link: a TCP relay on loopback that
// forwards every accepted connection to a target address and, per direction,
// limits the rate, delays every byte and emulates loss. (This machine's kernel has
// no netem, so `tc` cannot do it.)
//
// Guarantees, per direction of every relayed connection:
//  * Rate: bytes leave the relay's rate limiter no faster than `rate_bps` on
//    average (token bucket; burst max(16 KiB, 2 ms at the rate)).
//  * Delay: a chunk read at time t leaves the limiter at s >= t and is written out
//    no earlier than s + delay. Rate and delay compose as on a real link: the delay
//    queue holds up to 2 x the bandwidth-delay product + 1 MiB, so a bulk transfer
//    runs at the rate and a small message takes the delay.
//  * Loss: TCP hides loss from the application (it retransmits), so loss is never a
//    dropped byte here; a chunk of k segments is "lost" with probability
//    1 - (1 - loss)^k and then delivered one retransmission timeout late, and
//    everything behind it waits for it (head-of-line blocking). Seeded: the same
//    seed gives the same losses for the same chunks.
//  * Changes (LinkRelayOptions::changes, times from the relay's start): while a
//    change is in force the rate is scaled by its rate_scale (both directions), and
//    a change with rate_scale 0 is an outage: no chunk that would leave the limiter
//    inside it leaves before it ends (connections stay open, data waits, as TCP
//    would retransmit once the link is back). Overlapping changes multiply.
//  * Byte order is kept. An orderly close (FIN) of one side reaches the other side
//    after the one-way delay (half-close is kept); a reset or a failed write on one
//    side resets the other side after the delay. A target that refuses is retried
//    until connect_timeout, then the accepted side is reset.
//  * Every wait is bounded (a 100 ms tick rechecks the stop flag); the destructor
//    resets open connections and joins every thread.
// Plain POSIX sockets: one accept thread per relay and one thread per connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ravnest::rt {

// One direction of an emulated link.
struct LinkDirection {
  double rate_bps = 0;                 // bits per second; 0 means unlimited
  std::chrono::microseconds delay{0};  // one-way propagation delay
  double loss = 0;                     // packet loss probability in [0, 1)
  std::string describe() const;        // "100 Mbit/s, 20 ms, loss 0%"
};

// Checks ranges (rate finite and >= 0, delay in [0, 60 s], loss in [0, 1));
// errors are kInvalidArgument and start with `what` ("link node0 -> node1: ...").
Status validate_link_direction(const LinkDirection& direction, const std::string& what);

// A scheduled change of a link: from `at` (since the relay started) for `duration`
// (0: to the end), the rate times `rate_scale`; rate_scale 0 takes the link down.
struct LinkChange {
  std::chrono::milliseconds at{0};
  std::chrono::milliseconds duration{0};
  double rate_scale = 1;
  std::string describe() const;  // "down from 5 s for 10 s", "rate x0.25 from 8 s"
};

struct LinkRelayOptions {
  std::string name = "link";  // names the relay in errors and logs
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;  // 0: any free port, see LinkRelay::port()
  std::string target_host = "127.0.0.1";
  uint16_t target_port = 0;
  LinkDirection forward;   // from the connecting side to the target
  LinkDirection backward;  // from the target back to the connecting side
  uint64_t seed = 1;
  // Extra delay of a lost chunk; 0 means Linux's usual 200 ms + one round trip.
  std::chrono::milliseconds rto{0};
  // How long a refused target is retried (it may not be listening yet).
  std::chrono::milliseconds connect_timeout{30000};
  std::vector<LinkChange> changes;  // scheduled rate changes and outages, both directions
};

struct LinkRelayStats {
  uint64_t connections = 0;     // accepted so far
  uint64_t open = 0;            // accepted and not yet closed on both sides
  uint64_t forward_bytes = 0;   // written to the target
  uint64_t backward_bytes = 0;  // written back to the connecting side
  uint64_t lost_chunks = 0;     // chunks delayed by a retransmission timeout
};

class LinkRelay {
 public:
  // Validates the options, binds and starts accepting.
  static Result<std::unique_ptr<LinkRelay>> start(LinkRelayOptions options);
  ~LinkRelay();
  LinkRelay(const LinkRelay&) = delete;
  LinkRelay& operator=(const LinkRelay&) = delete;

  uint16_t port() const;        // the bound listening port
  std::string address() const;  // "HOST:PORT" to dial instead of the target
  LinkRelayStats stats() const;

 private:
  struct Impl;
  explicit LinkRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ravnest::rt
